//! The part of qemu 7.2's `include/qemu/qemu-plugin.h` (plugin API version 1) this plugin uses,
//! declared by hand; the symbols come from the qemu binary that loads the plugin.

use std::ffi::{c_char, c_int, c_void};

pub type PluginId = u64;

/// `qemu_info_t`: only the leading field is read.
#[repr(C)]
pub struct Info {
    pub target_name: *const c_char,
    pub version_min: c_int,
    pub version_cur: c_int,
    pub system_emulation: bool,
}

/// `struct qemu_plugin_tb`, `struct qemu_plugin_insn`: opaque.
#[repr(C)]
pub struct Tb {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct Insn {
    _opaque: [u8; 0],
}

/// `QEMU_PLUGIN_CB_NO_REGS`.
pub const CB_NO_REGS: c_int = 0;

pub type TbTransCb = unsafe extern "C" fn(id: PluginId, tb: *mut Tb);
pub type VcpuUdataCb = unsafe extern "C" fn(vcpu_index: u32, userdata: *mut c_void);
pub type UdataCb = unsafe extern "C" fn(id: PluginId, userdata: *mut c_void);

extern "C" {
    pub fn qemu_plugin_register_vcpu_tb_trans_cb(id: PluginId, cb: TbTransCb);
    pub fn qemu_plugin_register_vcpu_tb_exec_cb(
        tb: *mut Tb,
        cb: VcpuUdataCb,
        flags: c_int,
        userdata: *mut c_void,
    );
    pub fn qemu_plugin_register_vcpu_insn_exec_cb(
        insn: *mut Insn,
        cb: VcpuUdataCb,
        flags: c_int,
        userdata: *mut c_void,
    );
    pub fn qemu_plugin_register_atexit_cb(id: PluginId, cb: UdataCb, userdata: *mut c_void);
    pub fn qemu_plugin_tb_n_insns(tb: *const Tb) -> usize;
    pub fn qemu_plugin_tb_get_insn(tb: *const Tb, idx: usize) -> *mut Insn;
    pub fn qemu_plugin_insn_data(insn: *const Insn) -> *const c_void;
    pub fn qemu_plugin_insn_size(insn: *const Insn) -> usize;
    pub fn qemu_plugin_insn_symbol(insn: *const Insn) -> *const c_char;
    pub fn qemu_plugin_insn_haddr(insn: *const Insn) -> *mut c_void;
}
