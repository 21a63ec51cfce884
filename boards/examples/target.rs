//! Prints the Rust target triple and tuned `target-cpu` for a board or target name, for
//! scripts/cross-build: `cargo run -q -p edgebert-boards --example target -- pi4`.

use edgebert_boards::{Board, Target};

fn main() -> std::process::ExitCode {
    let Some(name) = std::env::args().nth(1) else {
        eprintln!(
            "usage: target <board|target>  (boards: {})",
            Board::ids().join(", ")
        );
        return std::process::ExitCode::from(1);
    };
    if let Some(board) = Board::by_name(&name) {
        println!(
            "{} {} {}",
            board.default_target().triple(),
            board.target_cpu(),
            board.id
        );
    } else if let Some(target) = Target::parse(&name) {
        println!("{} generic generic", target.triple());
    } else {
        eprintln!(
            "error: `{name}` is neither a board ({}) nor a target (aarch64, armv7)",
            Board::ids().join(", ")
        );
        return std::process::ExitCode::from(1);
    }
    std::process::ExitCode::SUCCESS
}
