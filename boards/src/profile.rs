//! One [`Board`] value per supported Raspberry Pi: what the cross-builds target and what the
//! runtime should assume about cores, memory and CPU features.

use std::fmt;

/// A Rust target a board runs (`rustc --print target-list` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// 64-bit Raspberry Pi OS (bookworm or newer): `aarch64-unknown-linux-gnu`.
    Aarch64,
    /// 32-bit Raspberry Pi OS: `armv7-unknown-linux-gnueabihf` (NEON, hard float).
    Armv7,
}

impl Target {
    /// Every target a board profile names.
    pub const ALL: [Target; 2] = [Target::Aarch64, Target::Armv7];

    /// The Rust target triple.
    pub fn triple(self) -> &'static str {
        match self {
            Target::Aarch64 => "aarch64-unknown-linux-gnu",
            Target::Armv7 => "armv7-unknown-linux-gnueabihf",
        }
    }

    /// The target named by a triple or a short name (`aarch64`, `arm64`, `armv7`, `armhf`).
    pub fn parse(name: &str) -> Option<Target> {
        let name = name.trim().to_ascii_lowercase();
        Target::ALL.into_iter().find(|t| {
            name == t.triple()
                || match t {
                    Target::Aarch64 => matches!(name.as_str(), "aarch64" | "arm64" | "64"),
                    Target::Armv7 => matches!(name.as_str(), "armv7" | "armhf" | "arm" | "32"),
                }
        })
    }
}

/// The Arm core of a board, as LLVM's `target-cpu` and `/proc/cpuinfo`'s `CPU part` know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Core {
    CortexA53,
    CortexA72,
    CortexA76,
}

impl Core {
    /// The `-C target-cpu=` (and qemu `-cpu`) name.
    pub fn llvm_name(self) -> &'static str {
        match self {
            Core::CortexA53 => "cortex-a53",
            Core::CortexA72 => "cortex-a72",
            Core::CortexA76 => "cortex-a76",
        }
    }

    /// The core for a `/proc/cpuinfo` `CPU part` value (implementer 0x41, Arm).
    pub fn from_part(part: u32) -> Option<Core> {
        match part {
            0xd03 => Some(Core::CortexA53),
            0xd08 => Some(Core::CortexA72),
            0xd0b => Some(Core::CortexA76),
            _ => None,
        }
    }

    /// Whether the core has the Armv8.2 dot-product instructions (tract's SDOT int8 kernel).
    pub fn has_dotprod(self) -> bool {
        matches!(self, Core::CortexA76)
    }
}

impl fmt::Display for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Core::CortexA53 => "Cortex-A53",
            Core::CortexA72 => "Cortex-A72",
            Core::CortexA76 => "Cortex-A76",
        };
        f.write_str(name)
    }
}

/// A supported board: hardware facts and the settings edgebert derives from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Board {
    /// Short name used on the command line and in file names (`pi4`).
    pub id: &'static str,
    /// Other accepted names (`--board rpi4`).
    pub aliases: &'static [&'static str],
    /// The product name.
    pub name: &'static str,
    pub soc: &'static str,
    pub core: Core,
    pub cores: usize,
    /// Clock range across the board's revisions, MHz.
    pub clock_mhz: (u32, u32),
    /// RAM range across the board's variants, MiB.
    pub memory_mib: (u64, u64),
    /// How `/proc/device-tree/model` (and cpuinfo's `Model`) starts on this board.
    pub model_prefixes: &'static [&'static str],
    /// The board-type field of the new-style revision code (cpuinfo `Revision`, bits 4-11).
    pub revision_types: &'static [u32],
}

/// Every supported board, the Zero 2 W first (the smallest: its limits are the binding ones).
pub const BOARDS: &[Board] = &[
    Board {
        id: "pi-zero-2w",
        aliases: &["zero2w", "zero-2w", "pizero2w", "rpi-zero-2w"],
        name: "Raspberry Pi Zero 2 W",
        soc: "BCM2710A1 (RP3A0)",
        core: Core::CortexA53,
        cores: 4,
        clock_mhz: (1000, 1000),
        memory_mib: (512, 512),
        model_prefixes: &["Raspberry Pi Zero 2"],
        revision_types: &[0x12],
    },
    Board {
        id: "pi3",
        aliases: &["rpi3", "pi3b", "pi3b+", "pi-3"],
        name: "Raspberry Pi 3 Model B / B+",
        soc: "BCM2837 / BCM2837B0",
        core: Core::CortexA53,
        cores: 4,
        clock_mhz: (1200, 1400),
        memory_mib: (1024, 1024),
        model_prefixes: &["Raspberry Pi 3 Model B"],
        revision_types: &[0x08, 0x0d],
    },
    Board {
        id: "pi4",
        aliases: &["rpi4", "pi4b", "pi-4", "pi400", "cm4"],
        name: "Raspberry Pi 4 Model B",
        soc: "BCM2711",
        core: Core::CortexA72,
        cores: 4,
        clock_mhz: (1500, 1800),
        memory_mib: (1024, 8192),
        model_prefixes: &[
            "Raspberry Pi 4",
            "Raspberry Pi 400",
            "Raspberry Pi Compute Module 4",
        ],
        revision_types: &[0x11, 0x13, 0x14],
    },
    Board {
        id: "pi5",
        aliases: &["rpi5", "pi5b", "pi-5", "pi500", "cm5"],
        name: "Raspberry Pi 5",
        soc: "BCM2712",
        core: Core::CortexA76,
        cores: 4,
        clock_mhz: (2400, 2400),
        memory_mib: (2048, 16384),
        model_prefixes: &[
            "Raspberry Pi 5",
            "Raspberry Pi 500",
            "Raspberry Pi Compute Module 5",
        ],
        revision_types: &[0x17, 0x18, 0x19],
    },
];

impl Board {
    /// The board named by its id or an alias, case-insensitively.
    pub fn by_name(name: &str) -> Option<&'static Board> {
        let name = name.trim().to_ascii_lowercase();
        BOARDS
            .iter()
            .find(|b| b.id == name || b.aliases.contains(&name.as_str()))
    }

    /// Every accepted board id, for error messages and `--help`.
    pub fn ids() -> Vec<&'static str> {
        BOARDS.iter().map(|b| b.id).collect()
    }

    /// The board whose device-tree model string this is.
    pub fn by_model(model: &str) -> Option<&'static Board> {
        let model = model.trim_matches(|c: char| c == '\0' || c.is_whitespace());
        BOARDS
            .iter()
            .find(|b| b.model_prefixes.iter().any(|p| model.starts_with(p)))
    }

    /// The board of a new-style revision code (cpuinfo `Revision`, hex), with its RAM in MiB.
    pub fn by_revision(code: u32) -> Option<(&'static Board, Option<u64>)> {
        // Bit 23 marks the new-style code: ...MMM (bits 20-22, memory) ... TTTTTTTT (4-11, type).
        if code & (1 << 23) == 0 {
            return None;
        }
        let board_type = (code >> 4) & 0xff;
        let board = BOARDS
            .iter()
            .find(|b| b.revision_types.contains(&board_type))?;
        let memory = match (code >> 20) & 0x7 {
            m @ 0..=6 => Some(256u64 << m),
            _ => None,
        };
        Some((board, memory))
    }

    /// The target a stock install runs: 64-bit Raspberry Pi OS is the default on every board here.
    pub fn default_target(&self) -> Target {
        Target::Aarch64
    }

    /// Threads for matrix products: one per core (the board has nothing heavier to do).
    pub fn threads(&self) -> usize {
        self.cores
    }

    /// `-C target-cpu` for a build tuned to this board. Such a build stops with an illegal
    /// instruction on older cores (a Pi 5 build on a Pi 4), so the shipped build stays generic
    /// and tract picks its kernels at run time.
    pub fn target_cpu(&self) -> &'static str {
        self.core.llvm_name()
    }
}

impl fmt::Display for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for b in BOARDS {
            for name in std::iter::once(&b.id).chain(b.aliases) {
                assert!(seen.insert(*name), "{name} names two boards");
                assert_eq!(Board::by_name(name).map(|x| x.id), Some(b.id));
            }
        }
        assert!(Board::by_name("pi6").is_none());
        assert_eq!(Board::by_name(" PI4 ").map(|b| b.id), Some("pi4"));
    }

    #[test]
    fn only_the_pi5_core_has_dotprod() {
        let with: Vec<_> = BOARDS.iter().filter(|b| b.core.has_dotprod()).collect();
        assert_eq!(with.len(), 1);
        assert_eq!(with[0].id, "pi5");
        assert_eq!(Board::by_name("pi5").unwrap().target_cpu(), "cortex-a76");
    }

    #[test]
    fn revision_codes_decode_board_and_memory() {
        // Codes as printed by each board's /proc/cpuinfo.
        let cases = [
            (0x902120, "pi-zero-2w", 512),
            (0xa02082, "pi3", 1024),
            (0xa020d3, "pi3", 1024),
            (0xc03114, "pi4", 4096),
            (0xd03114, "pi4", 8192),
            (0xd04170, "pi5", 8192),
            (0xe04171, "pi5", 16384),
        ];
        for (code, id, mib) in cases {
            let (b, m) = Board::by_revision(code).unwrap_or_else(|| panic!("{code:x}"));
            assert_eq!((b.id, m), (id, Some(mib)), "{code:x}");
        }
        // Old-style codes (before the Pi 2) and unknown types are not ours.
        assert!(Board::by_revision(0x000e).is_none());
        assert!(Board::by_revision(0xa22042).is_none()); // Pi 2 B v1.2
    }

    #[test]
    fn targets_parse_from_triples_and_short_names() {
        assert_eq!(
            Target::parse("aarch64-unknown-linux-gnu"),
            Some(Target::Aarch64)
        );
        assert_eq!(Target::parse("armhf"), Some(Target::Armv7));
        assert_eq!(Target::parse("x86_64"), None);
    }
}
