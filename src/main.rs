use clap::Parser;

// glibc's malloc spends a quarter of a loaded node's time in its free
// lists (`_int_malloc`, `unlink_chunk`, `malloc_consolidate`) once sled's
// cache has fragmented the heap; see docs/performance.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let cli = synap::cli::Cli::parse();
    std::process::exit(synap::cli::run(cli).await);
}
