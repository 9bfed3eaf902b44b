//! The FUSE side: serves a [`Disk`] at a mount point with `fuser`.
//!
//! Every open is `direct_io` and every entry and attribute has a zero time
//! to live, so the kernel caches nothing: after a cut, the next read sees
//! what the disk kept, not what the page cache remembers. Requests from
//! processes that a cut killed are refused, since the kernel may still hand
//! over a write such a process queued just before it died.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::disk::{Attr, Disk, Error, Kind};

const NO_CACHE: Duration = Duration::ZERO;

/// The disk and the processes whose requests it refuses.
#[derive(Default)]
pub struct Shared {
    /// The disk.
    pub disk: Mutex<Disk>,
    /// Processes killed by a cut.
    pub fenced: Mutex<HashSet<u32>>,
}

impl Shared {
    /// A poisoned lock only means a request panicked; the disk is whole.
    pub fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fenced(&self, pid: u32) -> bool {
        self.fenced.lock().unwrap_or_else(|p| p.into_inner()).contains(&pid)
    }
}

/// The `fuser` file system over [`Shared`].
pub struct PowerFs {
    shared: Arc<Shared>,
}

impl PowerFs {
    /// Serves `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The disk, unless `req` comes from a process a cut killed.
    fn disk(&self, req: &Request) -> Result<MutexGuard<'_, Disk>, Errno> {
        if self.shared.fenced(req.pid()) {
            return Err(Errno::EIO);
        }
        Ok(self.shared.disk())
    }
}

fn errno(e: Error) -> Errno {
    match e {
        Error::NotFound => Errno::ENOENT,
        Error::Exists => Errno::EEXIST,
        Error::NotDir => Errno::ENOTDIR,
        Error::IsDir => Errno::EISDIR,
        Error::NotEmpty => Errno::ENOTEMPTY,
        Error::Invalid => Errno::EINVAL,
    }
}

fn file_attr(a: Attr) -> FileAttr {
    let (kind, nlink) = match a.kind {
        Kind::File => (FileType::RegularFile, 1),
        Kind::Dir => (FileType::Directory, 2),
    };
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.created,
        mtime: a.created,
        ctime: a.created,
        crtime: a.created,
        kind,
        perm: a.perm,
        nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn perm(mode: u32, umask: u32) -> u16 {
    (mode & !umask & 0o7777) as u16
}

impl PowerFs {
    fn make(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        kind: Kind,
        mode: u32,
        umask: u32,
    ) -> Result<Attr, Errno> {
        let mut disk = self.disk(req)?;
        disk.create(parent.0, name, kind, perm(mode, umask), req.uid(), req.gid()).map_err(errno)
    }
}

impl Filesystem for PowerFs {
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.disk(req).and_then(|d| d.lookup(parent.0, name).map_err(errno)) {
            Ok(attr) => reply.entry(&NO_CACHE, &file_attr(attr), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.disk(req).and_then(|d| d.attr(ino.0).map_err(errno)) {
            Ok(attr) => reply.attr(&NO_CACHE, &file_attr(attr)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = self.disk(req).and_then(|mut d| {
            if let Some(size) = size {
                d.set_len(ino.0, size).map_err(errno)?;
            }
            if let Some(mode) = mode {
                d.set_perm(ino.0, (mode & 0o7777) as u16).map_err(errno)?;
            }
            d.attr(ino.0).map_err(errno)
        });
        match result {
            Ok(attr) => reply.attr(&NO_CACHE, &file_attr(attr)),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        match self.make(req, parent, name, Kind::File, mode, umask) {
            Ok(attr) => reply.entry(&NO_CACHE, &file_attr(attr), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        match self.make(req, parent, name, Kind::Dir, mode, umask) {
            Ok(attr) => reply.entry(&NO_CACHE, &file_attr(attr), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.disk(req).and_then(|mut d| d.unlink(parent.0, name).map_err(errno)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.disk(req).and_then(|mut d| d.rmdir(parent.0, name).map_err(errno)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        match self.disk(req).and_then(|mut d| d.rename(parent.0, name, newparent.0, newname, no_replace).map_err(errno))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.disk(req) {
            Ok(mut d) => match d.attr(ino.0) {
                Ok(_) => {
                    d.opened(ino.0);
                    reply.opened(FileHandle(ino.0), FopenFlags::FOPEN_DIRECT_IO);
                }
                Err(e) => reply.error(errno(e)),
            },
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.disk(req).and_then(|d| d.read(ino.0, offset, size as usize).map_err(errno)) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.disk(req).and_then(|mut d| d.write(ino.0, offset, data).map_err(errno)) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        // close(2) is not a sync.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.shared.disk().released(ino.0);
        reply.ok();
    }

    fn fsync(&self, req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.disk(req).and_then(|mut d| d.sync(ino.0).map_err(errno)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.disk(req).and_then(|d| d.attr(ino.0).map_err(errno)) {
            Ok(attr) if attr.kind == Kind::Dir => reply.opened(FileHandle(ino.0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let listed = match self.disk(req).and_then(|d| d.list(ino.0).map_err(errno)) {
            Ok(listed) => listed,
            Err(e) => return reply.error(e),
        };
        let dots = [(".".into(), ino.0, FileType::Directory), ("..".into(), ino.0, FileType::Directory)];
        let entries = dots.into_iter().chain(listed.into_iter().map(|(name, attr)| {
            let kind = if attr.kind == Kind::Dir { FileType::Directory } else { FileType::RegularFile };
            (name, attr.ino, kind)
        }));
        for (k, (name, child, kind)) in entries.enumerate().skip(offset as usize) {
            let name: std::ffi::OsString = name;
            if reply.add(INodeNo(child), k as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(&self, req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.disk(req).and_then(|mut d| d.sync(ino.0).map_err(errno)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let blocks = 64 << 20; // 256 GiB of 4 KiB blocks, free: memory is the limit.
        reply.statfs(blocks, blocks, blocks, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.make(req, parent, name, Kind::File, mode, umask) {
            Ok(attr) => {
                self.shared.disk().opened(attr.ino);
                reply.created(
                    &NO_CACHE,
                    &file_attr(attr),
                    Generation(0),
                    FileHandle(attr.ino),
                    FopenFlags::FOPEN_DIRECT_IO,
                )
            }
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Plain allocation only: it may extend the file, never shrink it.
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let result = self.disk(req).and_then(|mut d| {
            let size = d.attr(ino.0).map_err(errno)?.size;
            if offset + length > size {
                d.set_len(ino.0, offset + length).map_err(errno)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
