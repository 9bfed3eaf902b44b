//! An in-memory disk that forgets, on a power cut, everything nobody synced.
//!
//! Each file has the content it has now and the content it had when it was
//! last synced (`fsync` or `fdatasync`: both persist data and length); each
//! directory has its entries now and its entries when it was last synced.
//! Creating, renaming and removing are changes of a directory: they survive
//! a cut only if that directory was synced after them. [`Disk::cut`] puts
//! every file and directory back to its synced state and drops whatever no
//! synced directory reaches any more.
//!
//! That is the strict reading of POSIX, and what a disk with a volatile
//! write cache gives a program that does not sync. Nothing here knows about
//! `sync_file_range`: it never reaches a FUSE file system, so a program that
//! relies on it loses those writes, as it can on a real disk.
//!
//! File content is kept in copy-on-write chunks, so that syncing a large
//! file copies pointers, not bytes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::sync::Arc;
use std::time::SystemTime;

/// Bytes per content chunk.
const CHUNK: usize = 64 * 1024;

/// Inode number of the root directory.
pub const ROOT: u64 = 1;

/// Why an operation failed, as an errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// No such file or directory.
    NotFound,
    /// The name exists already.
    Exists,
    /// A directory was expected.
    NotDir,
    /// A file was expected.
    IsDir,
    /// The directory is not empty.
    NotEmpty,
    /// The request makes no sense (e.g. renaming a directory into itself).
    Invalid,
}

/// What kind of inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// The attributes `stat` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// File or directory.
    pub kind: Kind,
    /// Length in bytes (files).
    pub size: u64,
    /// Permission bits.
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Creation time, also shown as access, change and modification time.
    pub created: SystemTime,
}

/// File content: fixed-size chunks shared with the synced copy until
/// written; `None` is a chunk of zeros (a hole).
#[derive(Debug, Clone, Default)]
struct Content {
    chunks: Vec<Option<Arc<Vec<u8>>>>,
    len: u64,
}

impl Content {
    fn read(&self, offset: u64, size: usize) -> Vec<u8> {
        if offset >= self.len {
            return Vec::new();
        }
        let end = (offset + size as u64).min(self.len);
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut at = offset;
        while at < end {
            let (k, within) = ((at / CHUNK as u64) as usize, (at % CHUNK as u64) as usize);
            let take = ((CHUNK - within) as u64).min(end - at) as usize;
            match &self.chunks[k] {
                Some(chunk) => out.extend_from_slice(&chunk[within..within + take]),
                None => out.resize(out.len() + take, 0),
            }
            at += take as u64;
        }
        out
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        let needed = end.div_ceil(CHUNK as u64) as usize;
        if self.chunks.len() < needed {
            self.chunks.resize(needed, None);
        }
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let (k, within) = ((at / CHUNK as u64) as usize, (at % CHUNK as u64) as usize);
            let take = (CHUNK - within).min(rest.len());
            let chunk = self.chunks[k].get_or_insert_with(|| Arc::new(vec![0; CHUNK]));
            Arc::make_mut(chunk)[within..within + take].copy_from_slice(&rest[..take]);
            rest = &rest[take..];
            at += take as u64;
        }
        self.len = self.len.max(end);
    }

    fn set_len(&mut self, len: u64) {
        if len < self.len {
            self.chunks.truncate(len.div_ceil(CHUNK as u64) as usize);
            // Bytes past the end must read as zeros if the file grows again.
            let within = (len % CHUNK as u64) as usize;
            if within > 0 {
                if let Some(Some(chunk)) = self.chunks.last_mut() {
                    Arc::make_mut(chunk)[within..].fill(0);
                }
            }
        } else {
            self.chunks.resize(len.div_ceil(CHUNK as u64) as usize, None);
        }
        self.len = len;
    }
}

#[derive(Debug, Clone)]
enum Body {
    File { now: Content, synced: Content },
    Dir { now: BTreeMap<OsString, u64>, synced: BTreeMap<OsString, u64> },
}

#[derive(Debug, Clone)]
struct Inode {
    attr: Attr,
    body: Body,
}

/// The whole disk.
#[derive(Debug)]
pub struct Disk {
    inodes: HashMap<u64, Inode>,
    /// Open handles per inode: an open file outlives its last name.
    open: HashMap<u64, u32>,
    next_ino: u64,
}

impl Default for Disk {
    fn default() -> Self {
        Self::new()
    }
}

impl Disk {
    /// An empty disk: a root directory, synced.
    pub fn new() -> Self {
        let root = Inode {
            attr: Attr { ino: ROOT, kind: Kind::Dir, size: 0, perm: 0o755, uid: 0, gid: 0, created: SystemTime::now() },
            body: Body::Dir { now: BTreeMap::new(), synced: BTreeMap::new() },
        };
        Self { inodes: HashMap::from([(ROOT, root)]), open: HashMap::new(), next_ino: ROOT + 1 }
    }

    fn inode(&self, ino: u64) -> Result<&Inode, Error> {
        self.inodes.get(&ino).ok_or(Error::NotFound)
    }

    fn entries(&self, dir: u64) -> Result<&BTreeMap<OsString, u64>, Error> {
        match &self.inode(dir)?.body {
            Body::Dir { now, .. } => Ok(now),
            Body::File { .. } => Err(Error::NotDir),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Error> {
        match &mut self.inodes.get_mut(&dir).ok_or(Error::NotFound)?.body {
            Body::Dir { now, .. } => Ok(now),
            Body::File { .. } => Err(Error::NotDir),
        }
    }

    fn content_mut(&mut self, ino: u64) -> Result<&mut Content, Error> {
        match &mut self.inodes.get_mut(&ino).ok_or(Error::NotFound)?.body {
            Body::File { now, .. } => Ok(now),
            Body::Dir { .. } => Err(Error::IsDir),
        }
    }

    /// The attributes of `ino`.
    pub fn attr(&self, ino: u64) -> Result<Attr, Error> {
        let inode = self.inode(ino)?;
        let size = match &inode.body {
            Body::File { now, .. } => now.len,
            Body::Dir { .. } => 0,
        };
        Ok(Attr { size, ..inode.attr })
    }

    /// The entry `name` of directory `dir`.
    pub fn lookup(&self, dir: u64, name: &OsStr) -> Result<Attr, Error> {
        let ino = *self.entries(dir)?.get(name).ok_or(Error::NotFound)?;
        self.attr(ino)
    }

    /// Creates `name` in `dir` (a file or a directory).
    pub fn create(&mut self, dir: u64, name: &OsStr, kind: Kind, perm: u16, uid: u32, gid: u32) -> Result<Attr, Error> {
        if self.entries(dir)?.contains_key(name) {
            return Err(Error::Exists);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let body = match kind {
            Kind::File => Body::File { now: Content::default(), synced: Content::default() },
            Kind::Dir => Body::Dir { now: BTreeMap::new(), synced: BTreeMap::new() },
        };
        let attr = Attr { ino, kind, size: 0, perm, uid, gid, created: SystemTime::now() };
        self.inodes.insert(ino, Inode { attr, body });
        self.entries_mut(dir)?.insert(name.to_owned(), ino);
        Ok(attr)
    }

    /// Removes the file `name` from `dir`.
    pub fn unlink(&mut self, dir: u64, name: &OsStr) -> Result<(), Error> {
        let ino = *self.entries(dir)?.get(name).ok_or(Error::NotFound)?;
        if self.attr(ino)?.kind == Kind::Dir {
            return Err(Error::IsDir);
        }
        self.entries_mut(dir)?.remove(name);
        Ok(())
    }

    /// Removes the empty directory `name` from `dir`.
    pub fn rmdir(&mut self, dir: u64, name: &OsStr) -> Result<(), Error> {
        let ino = *self.entries(dir)?.get(name).ok_or(Error::NotFound)?;
        if !self.entries(ino)?.is_empty() {
            return Err(Error::NotEmpty);
        }
        self.entries_mut(dir)?.remove(name);
        Ok(())
    }

    /// Moves `name` of `dir` to `new_name` of `new_dir`, replacing a file or
    /// an empty directory there (unless `no_replace`).
    pub fn rename(
        &mut self,
        dir: u64,
        name: &OsStr,
        new_dir: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> Result<(), Error> {
        let ino = *self.entries(dir)?.get(name).ok_or(Error::NotFound)?;
        if ino == new_dir || (self.attr(ino)?.kind == Kind::Dir && self.is_under(new_dir, ino)) {
            return Err(Error::Invalid);
        }
        if let Some(&target) = self.entries(new_dir)?.get(new_name) {
            if target == ino {
                return Ok(());
            }
            if no_replace {
                return Err(Error::Exists);
            }
            match (self.attr(ino)?.kind, self.attr(target)?.kind) {
                (Kind::Dir, Kind::File) => return Err(Error::NotDir),
                (Kind::File, Kind::Dir) => return Err(Error::IsDir),
                (Kind::Dir, Kind::Dir) if !self.entries(target)?.is_empty() => return Err(Error::NotEmpty),
                _ => {}
            }
        }
        self.entries_mut(dir)?.remove(name);
        self.entries_mut(new_dir)?.insert(new_name.to_owned(), ino);
        Ok(())
    }

    /// Whether directory `dir` is `ancestor` or lies below it.
    fn is_under(&self, dir: u64, ancestor: u64) -> bool {
        let mut stack = vec![ancestor];
        while let Some(d) = stack.pop() {
            if d == dir {
                return true;
            }
            if let Ok(entries) = self.entries(d) {
                stack.extend(entries.values().copied().filter(|i| self.attr(*i).is_ok_and(|a| a.kind == Kind::Dir)));
            }
        }
        false
    }

    /// The entries of `dir`, by name.
    pub fn list(&self, dir: u64) -> Result<Vec<(OsString, Attr)>, Error> {
        self.entries(dir)?.iter().map(|(name, ino)| Ok((name.clone(), self.attr(*ino)?))).collect()
    }

    /// Reads up to `size` bytes of `ino` at `offset`.
    pub fn read(&self, ino: u64, offset: u64, size: usize) -> Result<Vec<u8>, Error> {
        match &self.inode(ino)?.body {
            Body::File { now, .. } => Ok(now.read(offset, size)),
            Body::Dir { .. } => Err(Error::IsDir),
        }
    }

    /// Writes `data` into `ino` at `offset`.
    pub fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.content_mut(ino)?.write(offset, data);
        Ok(())
    }

    /// Truncates or extends `ino` to `len` bytes.
    pub fn set_len(&mut self, ino: u64, len: u64) -> Result<(), Error> {
        self.content_mut(ino)?.set_len(len);
        Ok(())
    }

    /// Sets the permission bits of `ino`.
    pub fn set_perm(&mut self, ino: u64, perm: u16) -> Result<(), Error> {
        self.inodes.get_mut(&ino).ok_or(Error::NotFound)?.attr.perm = perm;
        Ok(())
    }

    /// `fsync`/`fdatasync` of a file, or `fsync` of a directory: what it
    /// holds now survives a cut.
    pub fn sync(&mut self, ino: u64) -> Result<(), Error> {
        match &mut self.inodes.get_mut(&ino).ok_or(Error::NotFound)?.body {
            Body::File { now, synced } => *synced = now.clone(),
            Body::Dir { now, synced } => {
                *synced = now.clone();
                self.collect();
            }
        }
        Ok(())
    }

    /// Counts an open handle of `ino`.
    pub fn opened(&mut self, ino: u64) {
        *self.open.entry(ino).or_default() += 1;
    }

    /// Drops an open handle of `ino`.
    pub fn released(&mut self, ino: u64) {
        if let Some(count) = self.open.get_mut(&ino) {
            *count -= 1;
            if *count == 0 {
                self.open.remove(&ino);
            }
        }
    }

    /// The power cut: every file and directory goes back to what was last
    /// synced of it; what no synced directory reaches is gone. Open handles
    /// are forgotten (their processes died with the power).
    pub fn cut(&mut self) {
        self.open.clear();
        for inode in self.inodes.values_mut() {
            match &mut inode.body {
                Body::File { now, synced } => *now = synced.clone(),
                Body::Dir { now, synced } => *now = synced.clone(),
            }
        }
        self.collect();
    }

    /// Frees inodes that neither the current nor the synced tree reaches
    /// and that nobody holds open.
    fn collect(&mut self) {
        let mut reached = HashSet::from([ROOT]);
        let mut stack = vec![ROOT];
        while let Some(ino) = stack.pop() {
            if let Some(Inode { body: Body::Dir { now, synced }, .. }) = self.inodes.get(&ino) {
                for child in now.values().chain(synced.values()) {
                    if reached.insert(*child) {
                        stack.push(*child);
                    }
                }
            }
        }
        let open = &self.open;
        self.inodes.retain(|ino, _| reached.contains(ino) || open.contains_key(ino));
    }

    /// Bytes of file content held now (for the report).
    pub fn bytes(&self) -> u64 {
        self.inodes
            .values()
            .map(|i| match &i.body {
                Body::File { now, .. } => now.len,
                Body::Dir { .. } => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    fn file(disk: &mut Disk, dir: u64, n: &str) -> u64 {
        disk.create(dir, name(n), Kind::File, 0o644, 0, 0).unwrap().ino
    }

    #[test]
    fn unsynced_writes_are_lost_and_synced_ones_kept() {
        let mut disk = Disk::new();
        let f = file(&mut disk, ROOT, "log");
        disk.sync(ROOT).unwrap();
        disk.write(f, 0, b"durable").unwrap();
        disk.sync(f).unwrap();
        disk.write(f, 7, b" and lost").unwrap();
        disk.write(f, 0, b"D").unwrap();
        assert_eq!(disk.read(f, 0, 100).unwrap(), b"Durable and lost");
        disk.cut();
        assert_eq!(disk.read(f, 0, 100).unwrap(), b"durable");
        assert_eq!(disk.attr(f).unwrap().size, 7);
    }

    #[test]
    fn a_synced_file_in_an_unsynced_directory_is_lost() {
        let mut disk = Disk::new();
        let f = file(&mut disk, ROOT, "new");
        disk.write(f, 0, b"data").unwrap();
        disk.sync(f).unwrap();
        disk.cut();
        assert_eq!(disk.lookup(ROOT, name("new")), Err(Error::NotFound));
        assert!(disk.attr(f).is_err(), "unreachable inodes are freed");
    }

    #[test]
    fn a_rename_needs_its_directory_synced() {
        let mut disk = Disk::new();
        let f = file(&mut disk, ROOT, "meta.tmp");
        disk.write(f, 0, b"v2").unwrap();
        disk.sync(f).unwrap();
        disk.sync(ROOT).unwrap();
        disk.rename(ROOT, name("meta.tmp"), ROOT, name("meta"), false).unwrap();
        disk.cut();
        assert!(disk.lookup(ROOT, name("meta")).is_err());
        assert_eq!(disk.lookup(ROOT, name("meta.tmp")).unwrap().ino, f);

        disk.rename(ROOT, name("meta.tmp"), ROOT, name("meta"), false).unwrap();
        disk.sync(ROOT).unwrap();
        disk.cut();
        assert_eq!(disk.read(disk.lookup(ROOT, name("meta")).unwrap().ino, 0, 10).unwrap(), b"v2");
    }

    #[test]
    fn removals_come_back_unless_synced() {
        let mut disk = Disk::new();
        let f = file(&mut disk, ROOT, "segment");
        disk.sync(ROOT).unwrap();
        disk.unlink(ROOT, name("segment")).unwrap();
        disk.cut();
        assert_eq!(disk.lookup(ROOT, name("segment")).unwrap().ino, f);
        disk.unlink(ROOT, name("segment")).unwrap();
        disk.sync(ROOT).unwrap();
        disk.cut();
        assert!(disk.lookup(ROOT, name("segment")).is_err());
    }

    #[test]
    fn a_truncation_is_a_write_like_any_other() {
        let mut disk = Disk::new();
        let f = file(&mut disk, ROOT, "f");
        disk.write(f, 0, &vec![7u8; CHUNK + 10]).unwrap();
        disk.sync(f).unwrap();
        disk.set_len(f, 5).unwrap();
        disk.set_len(f, CHUNK as u64 + 10).unwrap();
        assert_eq!(disk.read(f, 0, 6).unwrap(), vec![7, 7, 7, 7, 7, 0]);
        disk.sync(ROOT).unwrap();
        disk.cut();
        assert_eq!(disk.read(f, 0, CHUNK + 10).unwrap(), vec![7u8; CHUNK + 10]);
    }

    #[test]
    fn sparse_writes_read_zeros_in_the_holes() {
        let mut disk = Disk::new();
        let f = file(&mut disk, ROOT, "sparse");
        disk.write(f, 3 * CHUNK as u64 + 1, b"x").unwrap();
        let all = disk.read(f, 0, 4 * CHUNK).unwrap();
        assert_eq!(all.len(), 3 * CHUNK + 2);
        assert!(all[..3 * CHUNK + 1].iter().all(|b| *b == 0));
        assert_eq!(all[3 * CHUNK + 1], b'x');
    }

    #[test]
    fn directories_rename_and_refuse_what_posix_refuses() {
        let mut disk = Disk::new();
        let d = disk.create(ROOT, name("d"), Kind::Dir, 0o755, 0, 0).unwrap().ino;
        file(&mut disk, d, "x");
        assert_eq!(disk.rmdir(ROOT, name("d")), Err(Error::NotEmpty));
        assert_eq!(disk.rename(ROOT, name("d"), d, name("inside"), false), Err(Error::Invalid));
        file(&mut disk, ROOT, "taken");
        assert_eq!(disk.rename(d, name("x"), ROOT, name("taken"), true), Err(Error::Exists));
        disk.rename(d, name("x"), ROOT, name("taken"), false).unwrap();
        disk.rmdir(ROOT, name("d")).unwrap();
        assert_eq!(disk.list(ROOT).unwrap().into_iter().map(|(n, _)| n).collect::<Vec<_>>(), vec!["taken"]);
    }

    #[test]
    fn an_open_file_outlives_its_name_until_released() {
        let mut disk = Disk::new();
        let f = file(&mut disk, ROOT, "tmp");
        disk.opened(f);
        disk.unlink(ROOT, name("tmp")).unwrap();
        disk.sync(ROOT).unwrap();
        disk.write(f, 0, b"still here").unwrap();
        assert_eq!(disk.read(f, 0, 10).unwrap(), b"still here");
        disk.released(f);
        disk.sync(ROOT).unwrap();
        assert!(disk.attr(f).is_err());
    }
}
