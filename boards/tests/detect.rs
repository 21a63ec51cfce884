//! Detection from kernel files recorded on each board (tests/recorded), never the host's.

use std::path::Path;

use edgebert_boards::{detect_from, Core, DetectionSource, SystemFiles};

fn recorded(name: &str) -> SystemFiles {
    SystemFiles::read(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/recorded")
            .join(name),
    )
}

#[test]
fn every_board_is_recognised_from_its_own_files() {
    // (recording, board, core, dotprod flag in cpuinfo, RAM MiB, available MiB)
    let cases = [
        ("pi-zero-2w", "pi-zero-2w", Core::CortexA53, false, 428, 318),
        ("pi3", "pi3", Core::CortexA53, false, 923, 763),
        ("pi4", "pi4", Core::CortexA72, false, 3793, 3423),
        ("pi5", "pi5", Core::CortexA76, true, 8051, 7619),
    ];
    for (dir, id, core, dotprod, total, available) in cases {
        let d = detect_from(&recorded(dir), None).unwrap();
        assert_eq!(d.board.map(|b| b.id), Some(id), "{dir}");
        assert_eq!(d.source, DetectionSource::DeviceTree, "{dir}");
        assert_eq!(d.core(), Some(core), "{dir}");
        assert_eq!(d.cpu.cores, 4, "{dir}");
        assert_eq!(d.cpu.has("asimddp"), dotprod, "{dir}");
        assert_eq!(d.memory_total_mib, Some(total), "{dir}");
        assert_eq!(d.memory_available_mib, Some(available), "{dir}");
        assert_eq!(d.threads(), 4, "{dir}");
        assert!(d.warnings.is_empty(), "{dir}: {:?}", d.warnings);
    }
    let zero = detect_from(&recorded("pi-zero-2w"), None).unwrap();
    assert!(zero.cpu.has("neon"), "the 32-bit kernel lists neon");
    assert!(zero.name().contains("Zero 2 W Rev 1.0"), "{}", zero.name());
}

#[test]
fn without_a_device_tree_the_revision_code_decides() {
    let d = detect_from(&recorded("pi4-container"), None).unwrap();
    assert_eq!(d.board.map(|b| b.id), Some("pi4"));
    assert_eq!(d.source, DetectionSource::Revision);
    // meminfo wins over the revision code's 8 GiB: it is what this system sees.
    assert_eq!(d.memory_total_mib, Some(7811));

    let mut no_meminfo = recorded("pi4-container");
    no_meminfo.meminfo = None;
    let d = detect_from(&no_meminfo, None).unwrap();
    assert_eq!(d.memory_total_mib, Some(8192));
    assert_eq!(d.memory_available_mib, None);
    assert_eq!(d.memory_budget_mib(), Some(8192 - 150));

    // A cpuinfo Model line alone is enough too.
    let mut model_line_only = recorded("pi3");
    model_line_only.model = None;
    let d = detect_from(&model_line_only, None).unwrap();
    assert_eq!(
        (d.board.map(|b| b.id), d.source),
        (Some("pi3"), DetectionSource::CpuinfoModel)
    );
}

#[test]
fn an_unknown_machine_gets_generic_settings_and_a_warning() {
    let d = detect_from(&recorded("x86-host"), None).unwrap();
    assert!(d.board.is_none());
    assert_eq!(d.source, DetectionSource::Unknown);
    assert_eq!(d.threads(), 2, "its two cores");
    assert_eq!(d.core(), None);
    assert!(d.cpu.has("avx2"));
    assert_eq!(d.warnings.len(), 1);
    assert!(
        d.warnings[0].contains("generic settings"),
        "{}",
        d.warnings[0]
    );

    let nothing = detect_from(&SystemFiles::default(), None).unwrap();
    assert!(nothing.board.is_none());
    assert!(nothing.threads() >= 1);
    assert_eq!(nothing.memory_budget_mib(), None);
    assert_eq!(nothing.fits(100.0, 1.5), None);
}

#[test]
fn board_override_wins_and_says_when_it_disagrees() {
    let d = detect_from(&recorded("pi4"), Some("pi5")).unwrap();
    assert_eq!(d.board.map(|b| b.id), Some("pi5"));
    assert_eq!(d.source, DetectionSource::Override);
    assert_eq!(d.warnings.len(), 1);
    assert!(
        d.warnings[0].contains("overrides the detected Raspberry Pi 4"),
        "{:?}",
        d.warnings
    );
    // The hardware facts stay the hardware's.
    assert_eq!(d.core(), Some(Core::CortexA72));

    let same = detect_from(&recorded("pi4"), Some("rpi4")).unwrap();
    assert!(same.warnings.is_empty());

    let on_x86 = detect_from(&recorded("x86-host"), Some("zero2w")).unwrap();
    assert_eq!(on_x86.board.map(|b| b.id), Some("pi-zero-2w"));
    assert_eq!(on_x86.threads(), 2, "never more threads than cores online");

    let err = detect_from(&recorded("pi4"), Some("pi6")).unwrap_err();
    assert!(
        err.to_string().contains("pi-zero-2w, pi3, pi4, pi5"),
        "{err}"
    );
}

#[test]
fn memory_fit_uses_available_memory_with_margin() {
    let zero = detect_from(&recorded("pi-zero-2w"), None).unwrap();
    // 318 MiB available: a 111 MiB process fits with 50% headroom, a 250 MiB one does not.
    assert_eq!(zero.fits(111.0, 1.5), Some(true));
    assert_eq!(zero.fits(250.0, 1.5), Some(false));
}
