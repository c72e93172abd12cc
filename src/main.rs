// As in lib.rs; `#[global_allocator]` is safe to write, the unsafe part is inside mimalloc.
#![forbid(unsafe_code)]

// mimalloc: ingest allocates a few small strings per record; it is measurably
// faster than the system allocator on that path (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    driftwarden::cli::run()
}
