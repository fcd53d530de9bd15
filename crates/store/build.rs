//! `sqlx::migrate!` embeds `/migrations` at compile time, but cargo does not know that the
//! folder is an input: without this, a new migration file leaves a stale build (with the old
//! schema) in a shared target folder.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
