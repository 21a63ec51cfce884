//! `edgebert-qemu-count`: a TCG plugin for qemu-user 7.2 (plugin API version 1) that counts the
//! AArch64 instructions a program retires, by class ([`classify`]), by function (qemu's symbol
//! lookup, else the guest files' own symbol tables: `symbols.rs`) and by mark
//! ([`edgebert_boards::marker`]).
//!
//! ```text
//! qemu-aarch64 -cpu cortex-a53 -plugin target/release/libedgebert_qemu_count.so,out=counts.json BIN ARGS
//! ```
//!
//! Written by hand against `include/qemu/qemu-plugin.h` of Debian's qemu 7.2 source: the dozen
//! functions used are declared in [`ffi`], resolved by the dynamic linker from the qemu binary
//! that loads the plugin (no qemu headers or libraries at build time). Counting is per translated
//! block: each block's class histogram is computed once, at translation, and a callback per
//! executed block adds one to the block's counter for the current mark; the totals are formed at
//! exit. A block that leaves early (a fault) is counted whole, as qemu's own `insn` example does.

pub mod classify;
mod ffi;
mod report;
mod symbols;

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};

use classify::{classify, CLASSES};
use edgebert_boards::marker::{MARK_BEGIN, MARK_END, MARK_STEP};

/// Marks told apart in one run (the first slot is mark 0); later marks share the last slot.
pub const SLOTS: usize = 48;

/// One translated block: what it contains, and how often it ran under each mark's slot.
struct Block {
    symbol: u32,
    /// Host address of the block's first instruction (for [`symbols::Resolver`]).
    haddr: u64,
    classes: [u32; CLASSES.len()],
    q_transfers: u32,
    runs: [AtomicU64; SLOTS],
}

struct Plugin {
    out: Option<PathBuf>,
    blocks: Mutex<Vec<&'static Block>>,
    symbols: Mutex<(HashMap<String, u32>, Vec<String>)>,
    /// `slot_marks[slot]` is the mark that slot counts.
    slot_marks: Mutex<Vec<u16>>,
    slot: AtomicUsize,
    mark_count: AtomicU64,
}

static PLUGIN: OnceLock<Plugin> = OnceLock::new();

/// The plugin API version this plugin was written against (qemu 7.2).
#[no_mangle]
pub static qemu_plugin_version: c_int = 1;

/// Called by qemu when it loads the plugin; `argv` holds `key=value` arguments (`out=FILE`).
///
/// # Safety
/// Called by qemu with valid `info` and `argc` C strings in `argv`.
#[no_mangle]
pub unsafe extern "C" fn qemu_plugin_install(
    id: ffi::PluginId,
    info: *const ffi::Info,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    let target = CStr::from_ptr((*info).target_name).to_string_lossy();
    if target != "aarch64" {
        eprintln!("edgebert-qemu-count: decodes AArch64 only, not {target}");
        return -1;
    }
    let mut out = None;
    for i in 0..usize::try_from(argc).unwrap_or(0) {
        let arg = CStr::from_ptr(*argv.add(i)).to_string_lossy();
        match arg.split_once('=') {
            Some(("out", path)) => out = Some(PathBuf::from(path)),
            _ => {
                eprintln!("edgebert-qemu-count: unknown argument {arg} (takes out=FILE)");
                return -1;
            }
        }
    }
    let plugin = Plugin {
        out,
        blocks: Mutex::new(Vec::new()),
        symbols: Mutex::new((HashMap::new(), Vec::new())),
        slot_marks: Mutex::new(vec![0]),
        slot: AtomicUsize::new(0),
        mark_count: AtomicU64::new(0),
    };
    if PLUGIN.set(plugin).is_err() {
        return -1;
    }
    ffi::qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    ffi::qemu_plugin_register_atexit_cb(id, on_exit, std::ptr::null_mut());
    0
}

fn plugin() -> &'static Plugin {
    PLUGIN.get().expect("installed before any callback")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

unsafe extern "C" fn on_translate(_id: ffi::PluginId, tb: *mut ffi::Tb) {
    let p = plugin();
    let n = ffi::qemu_plugin_tb_n_insns(tb);
    let mut classes = [0u32; CLASSES.len()];
    let mut q_transfers = 0;
    let mut symbol = u32::MAX;
    let mut haddr = 0;
    for i in 0..n {
        let insn = ffi::qemu_plugin_tb_get_insn(tb, i);
        if ffi::qemu_plugin_insn_size(insn) != 4 {
            continue;
        }
        let word = u32::from_le_bytes(*(ffi::qemu_plugin_insn_data(insn) as *const [u8; 4]));
        let d = classify(word);
        classes[d.class as usize] += 1;
        q_transfers += u32::from(d.q_transfers);
        if i == 0 {
            symbol = intern(ffi::qemu_plugin_insn_symbol(insn));
            haddr = ffi::qemu_plugin_insn_haddr(insn) as u64;
        }
        let hint = match word {
            MARK_BEGIN => 1usize,
            MARK_STEP => 2,
            MARK_END => 3,
            _ => 0,
        };
        if hint > 0 {
            ffi::qemu_plugin_register_vcpu_insn_exec_cb(
                insn,
                on_mark_hint,
                ffi::CB_NO_REGS,
                hint as *mut c_void,
            );
        }
    }
    let block: &'static Block = Box::leak(Box::new(Block {
        symbol,
        haddr,
        classes,
        q_transfers,
        runs: std::array::from_fn(|_| AtomicU64::new(0)),
    }));
    lock(&p.blocks).push(block);
    ffi::qemu_plugin_register_vcpu_tb_exec_cb(
        tb,
        on_block,
        ffi::CB_NO_REGS,
        block as *const Block as *mut c_void,
    );
}

fn intern(name: *const c_char) -> u32 {
    let name = if name.is_null() {
        "?".to_string()
    } else {
        // SAFETY: qemu returns a NUL-terminated symbol name or NULL.
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned()
    };
    let mut symbols = lock(&plugin().symbols);
    if let Some(&i) = symbols.0.get(&name) {
        return i;
    }
    let i = symbols.1.len() as u32;
    symbols.1.push(name.clone());
    symbols.0.insert(name, i);
    i
}

unsafe extern "C" fn on_block(_vcpu: u32, block: *mut c_void) {
    let block = &*(block as *const Block);
    block.runs[plugin().slot.load(Relaxed)].fetch_add(1, Relaxed);
}

/// The marker's hints: begin (1) zeroes the count, step (2) adds one, end (3) makes the count
/// the current mark.
unsafe extern "C" fn on_mark_hint(_vcpu: u32, which: *mut c_void) {
    let p = plugin();
    match which as usize {
        1 => p.mark_count.store(0, Relaxed),
        2 => {
            p.mark_count.fetch_add(1, Relaxed);
        }
        _ => {
            let mark = p.mark_count.load(Relaxed).min(u64::from(u16::MAX)) as u16;
            let mut marks = lock(&p.slot_marks);
            let slot = match marks.iter().position(|&m| m == mark) {
                Some(s) => s,
                None if marks.len() < SLOTS => {
                    marks.push(mark);
                    marks.len() - 1
                }
                None => SLOTS - 1,
            };
            p.slot.store(slot, Relaxed);
        }
    }
}

unsafe extern "C" fn on_exit(_id: ffi::PluginId, _data: *mut c_void) {
    let p = plugin();
    let blocks = lock(&p.blocks);
    let marks = lock(&p.slot_marks).clone();
    let (mut ids, mut symbols) = lock(&p.symbols).clone();
    // Names qemu could not give, from the guest files' own symbol tables.
    let mut resolver = symbols::Resolver::new();
    let mut resolved = Vec::with_capacity(blocks.len());
    let mut own: HashMap<u64, u32> = HashMap::new();
    let unknown = ids.get("?").copied();
    for b in blocks.iter() {
        let mut symbol = b.symbol;
        if Some(symbol) == unknown || symbol == u32::MAX {
            if let Some(&s) = own.get(&b.haddr) {
                symbol = s;
            } else if let Some(name) = resolver.name(b.haddr) {
                symbol = *ids.entry(name.clone()).or_insert_with(|| {
                    symbols.push(name);
                    symbols.len() as u32 - 1
                });
                own.insert(b.haddr, symbol);
            }
        }
        resolved.push(symbol);
    }
    let mut counts = report::Counts::new(&marks, symbols);
    for (b, &symbol) in blocks.iter().zip(&resolved) {
        for (slot, runs) in b.runs.iter().enumerate() {
            let runs = runs.load(Relaxed);
            if runs > 0 {
                counts.add(slot, symbol, &b.classes, b.q_transfers, runs);
            }
        }
    }
    let json = counts.to_json(marks.len() >= SLOTS);
    match &p.out {
        Some(path) => {
            if let Err(e) = report::write_atomically(path, &json) {
                eprintln!("edgebert-qemu-count: cannot write {}: {e}", path.display());
            }
        }
        None => eprintln!("{json}"),
    }
}
