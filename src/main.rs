use clap::Parser;

// glibc's malloc spends a quarter of a loaded node's time in its free
// lists (`_int_malloc`, `unlink_chunk`, `malloc_consolidate`) once sled's
// cache has fragmented the heap; see docs/performance.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = synap::cli::Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = cli.worker_threads() {
        runtime.worker_threads(workers);
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    std::process::exit(runtime.block_on(synap::cli::run(cli)));
}
