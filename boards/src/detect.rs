//! Which board this is, from what the kernel reports: `/proc/device-tree/model`, then
//! `/proc/cpuinfo` (`Model`, then the `Revision` code), with `--board` to override. The files are
//! read once into [`SystemFiles`], so tests feed recordings from each board, not the host's.

use std::path::Path;

use crate::profile::{Board, Core};

/// The kernel files detection reads; `None` where a file is missing (not a Pi, a container).
#[derive(Debug, Clone, Default)]
pub struct SystemFiles {
    /// `/proc/device-tree/model` (NUL-terminated on a Pi).
    pub model: Option<String>,
    /// `/proc/cpuinfo`.
    pub cpuinfo: Option<String>,
    /// `/proc/meminfo`.
    pub meminfo: Option<String>,
}

impl SystemFiles {
    /// Reads the files under `root` (`/` on the device; a recording's folder in tests).
    pub fn read(root: &Path) -> SystemFiles {
        let read = |rel: &str| {
            std::fs::read(root.join(rel))
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        SystemFiles {
            model: read("proc/device-tree/model"),
            cpuinfo: read("proc/cpuinfo"),
            meminfo: read("proc/meminfo"),
        }
    }
}

/// What `/proc/cpuinfo` says about the processor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuInfo {
    /// `processor` entries: online cores.
    pub cores: usize,
    /// The Arm core, from `CPU part` (the first one listed).
    pub core: Option<Core>,
    /// The `Features` flags of the first core (`asimddp` = dotprod on arm64, `neon` on armv7).
    pub features: Vec<String>,
    /// The `Model` line (Raspberry Pi kernels print it; often absent elsewhere).
    pub model: Option<String>,
    /// The `Revision` code, hex.
    pub revision: Option<u32>,
}

impl CpuInfo {
    /// Parses `/proc/cpuinfo` as the arm64, armv7 and x86 kernels print it.
    pub fn parse(text: &str) -> CpuInfo {
        let mut info = CpuInfo::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let (key, value) = (key.trim(), value.trim());
            match key {
                "processor" => info.cores += 1,
                "CPU part" if info.core.is_none() => {
                    info.core = u32::from_str_radix(value.trim_start_matches("0x"), 16)
                        .ok()
                        .and_then(Core::from_part);
                }
                // arm kernels say `Features`, x86 kernels `flags`.
                "Features" | "flags" if info.features.is_empty() => {
                    info.features = value.split_whitespace().map(str::to_owned).collect();
                }
                "Model" => info.model = Some(value.to_owned()),
                "Revision" => info.revision = u32::from_str_radix(value, 16).ok(),
                _ => {}
            }
        }
        info
    }

    /// Whether a feature flag is listed.
    pub fn has(&self, flag: &str) -> bool {
        self.features.iter().any(|f| f == flag)
    }
}

/// `MemTotal` and `MemAvailable` from `/proc/meminfo`, MiB.
pub fn parse_meminfo(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kib / 1024)
        })
    };
    (field("MemTotal"), field("MemAvailable"))
}

/// How the board was identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectionSource {
    /// `--board` named it.
    Override,
    /// `/proc/device-tree/model`.
    DeviceTree,
    /// cpuinfo's `Model` line.
    CpuinfoModel,
    /// cpuinfo's `Revision` code.
    Revision,
    /// Not a known board: generic settings.
    Unknown,
}

/// The board edgebert runs on and what it will do about it.
#[derive(Debug, Clone)]
pub struct Detection {
    /// The profile, `None` for an unknown machine (generic settings).
    pub board: Option<&'static Board>,
    pub source: DetectionSource,
    /// The device-tree model string, as read.
    pub model: Option<String>,
    pub cpu: CpuInfo,
    /// RAM installed and available now, MiB (from meminfo, else the revision code or profile).
    pub memory_total_mib: Option<u64>,
    pub memory_available_mib: Option<u64>,
    /// Things a user should know (unknown board, override that disagrees with the hardware).
    pub warnings: Vec<String>,
}

/// An unknown `--board` name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown board `{name}`: known boards are {}", Board::ids().join(", "))]
pub struct UnknownBoard {
    pub name: String,
}

/// Detects the board from this machine's `/proc`, or takes `--board`'s.
pub fn detect(board_override: Option<&str>) -> Result<Detection, UnknownBoard> {
    detect_from(&SystemFiles::read(Path::new("/")), board_override)
}

/// Detects the board from recorded kernel files (see [`SystemFiles::read`]).
pub fn detect_from(
    files: &SystemFiles,
    board_override: Option<&str>,
) -> Result<Detection, UnknownBoard> {
    let cpu = files
        .cpuinfo
        .as_deref()
        .map(CpuInfo::parse)
        .unwrap_or_default();
    let model = files
        .model
        .as_deref()
        .map(|m| {
            m.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_owned()
        })
        .filter(|m| !m.is_empty());
    let (mut total, available) = files
        .meminfo
        .as_deref()
        .map(parse_meminfo)
        .unwrap_or((None, None));
    let revision = cpu.revision.and_then(Board::by_revision);
    if total.is_none() {
        total = revision.and_then(|(_, mib)| mib);
    }

    let detected = model
        .as_deref()
        .and_then(Board::by_model)
        .map(|b| (b, DetectionSource::DeviceTree))
        .or_else(|| {
            cpu.model
                .as_deref()
                .and_then(Board::by_model)
                .map(|b| (b, DetectionSource::CpuinfoModel))
        })
        .or_else(|| revision.map(|(b, _)| (b, DetectionSource::Revision)));

    let mut warnings = Vec::new();
    let (board, source) = match board_override {
        Some(name) => {
            let board = Board::by_name(name).ok_or_else(|| UnknownBoard {
                name: name.to_owned(),
            })?;
            if let Some((found, _)) = detected.filter(|(found, _)| found.id != board.id) {
                warnings.push(format!(
                    "--board {} overrides the detected {}",
                    board.id, found.name
                ));
            }
            (Some(board), DetectionSource::Override)
        }
        None => match detected {
            Some((b, source)) => (Some(b), source),
            None => {
                let what = model
                    .clone()
                    .or_else(|| cpu.model.clone())
                    .unwrap_or_else(|| "this machine".to_owned());
                warnings.push(format!(
                    "{what} is not a known Raspberry Pi ({}): using generic settings (--board overrides)",
                    Board::ids().join(", ")
                ));
                (None, DetectionSource::Unknown)
            }
        },
    };
    Ok(Detection {
        board,
        source,
        model,
        cpu,
        memory_total_mib: total.or(board.map(|b| b.memory_mib.0)),
        memory_available_mib: available,
        warnings,
    })
}

impl Detection {
    /// Threads to use: the board's, never more than the cores online; generic machines use their
    /// cores, at most 4 (more rarely helps batch-1 inference on a small model).
    pub fn threads(&self) -> usize {
        let online = match self.cpu.cores {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        match self.board {
            Some(b) => b.threads().min(online).max(1),
            None => online.clamp(1, 4),
        }
    }

    /// The core, as cpuinfo reports it, else the profile's.
    pub fn core(&self) -> Option<Core> {
        self.cpu.core.or(self.board.map(|b| b.core))
    }

    /// Memory a model may use, MiB: what the kernel says is available now, else the profile's
    /// smallest RAM less a typical Raspberry Pi OS Lite footprint (~150 MiB).
    pub fn memory_budget_mib(&self) -> Option<u64> {
        self.memory_available_mib.or_else(|| {
            self.memory_total_mib
                .or(self.board.map(|b| b.memory_mib.0))
                .map(|m| m.saturating_sub(150))
        })
    }

    /// Whether a process of `peak_mib` fits in the memory budget with `margin` to spare (1.5 =
    /// 50% headroom). `None` when the budget is unknown.
    pub fn fits(&self, peak_mib: f64, margin: f64) -> Option<bool> {
        self.memory_budget_mib()
            .map(|budget| peak_mib * margin <= budget as f64)
    }

    /// A one-line name: the board, or what the kernel calls the machine.
    pub fn name(&self) -> String {
        match (self.board, &self.model) {
            (Some(b), Some(m)) if self.source == DetectionSource::DeviceTree => {
                format!("{} ({m})", b.name)
            }
            (Some(b), _) => b.name.to_owned(),
            (None, Some(m)) => format!("{m} (generic)"),
            (None, None) => "generic machine".to_owned(),
        }
    }
}
