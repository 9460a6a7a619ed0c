//! A WASI command: what a plugin author gets by building a binary instead of
//! a `cdylib`. It implements `wasi:cli/command`, not `ferry:plugin/plugin`.

fn main() {
    println!("I am a command, not a ferry plugin.");
}
