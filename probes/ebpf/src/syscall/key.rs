//! The key of a futex word, formed the way the kernel's `get_futex_key` forms it.
//!
//! A private operation (`FUTEX_PRIVATE_FLAG`, `FUTEX2_PRIVATE`) is keyed by (process, address)
//! with no lookup: that is all the kernel looks at either. A non-private operation is keyed by
//! the memory it names: the mapping that holds the word is found with `bpf_find_vma`, and
//!
//! | mapping | key |
//! |---|---|
//! | no file (heap, stack, `.bss`, private anonymous) | (process, address) |
//! | a file mapped private and writable (copy-on-write) | (process, address) |
//! | `VM_MAYSHARE` (any `MAP_SHARED` mapping: file, shmem, `/dev/shm`, SysV shm, `MAP_SHARED\|MAP_ANONYMOUS`), or a read-only file mapping | (device, inode, byte offset in the file) |
//!
//! The kernel decides per page (a private file page not yet written is still the file's), the
//! rule here per mapping, as `/proc/PID/maps` shows it. The inode is named by `(s_dev, i_ino)`
//! of `file->f_mapping->host`, which the kernel's `i_seq` stands for (it is assigned lazily, at
//! the first shared operation, so a waiter's entry could read 0 where its waker later reads
//! the number). When the lookup cannot be made (`-EBUSY`: the mmap lock was taken for
//! writing; no BTF offsets; the raw-tracepoint hooks), the word is keyed by (process, address)
//! and the fallback is counted (`DropReason::SharedKeyFallback`).

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_find_vma, bpf_get_current_task_btf, bpf_probe_read_kernel};
use futexscope_probes_common::maps::{DropReason, FutexKey, VM_MAYSHARE, VM_WRITE};

use crate::maps::{KEY_OFFSETS, count_drop, read_global};

/// `-ENOENT` from `bpf_find_vma`: no mapping holds the address (the call fails with `EFAULT`).
const ENOENT: i64 = -2;

/// What the `bpf_find_vma` callback learns about the mapping of one word; on the caller's
/// stack.
#[repr(C)]
struct VmaQuery {
    /// The word's address.
    uaddr: u64,
    /// 0 until the callback ran; then 1 (process-local) or 2 (inode).
    found: u64,
    dev: u64,
    ino: u64,
    offset: u64,
}

const FOUND_PROCESS: u64 = 1;
const FOUND_INODE: u64 = 2;

/// Reads a `T` at kernel address `addr`.
///
/// # Safety
/// None beyond the helper's: it checks the read and fails cleanly on a bad address.
#[inline(always)]
unsafe fn read_kernel<T>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the read.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

/// The `bpf_find_vma` callback: classifies the mapping `vma` that holds `query.uaddr`.
/// Returns 0 (the helper ignores it; the verifier allows 0 or 1).
#[inline(never)]
extern "C" fn classify_vma(_task: *mut c_void, vma: *mut c_void, query: *mut c_void) -> i64 {
    // SAFETY: `query` is the `VmaQuery` on the stack of `shared_key`, which passed it to the
    // helper that calls this function.
    let query = unsafe { &mut *query.cast::<VmaQuery>() };
    let offsets = read_global(&KEY_OFFSETS);
    let vma = vma as u64;
    // SAFETY (every read): offsets into the kernel's structures from its BTF; each read is
    // checked by the helper.
    let Some(flags) = (unsafe { read_kernel::<u64>(vma + u64::from(offsets.vma_flags)) }) else {
        return 0;
    };
    let Some(file) = (unsafe { read_kernel::<u64>(vma + u64::from(offsets.vma_file)) }) else {
        return 0;
    };
    if file == 0 || (flags & VM_MAYSHARE == 0 && flags & VM_WRITE != 0) {
        query.found = FOUND_PROCESS;
        return 0;
    }
    let (Some(start), Some(pgoff)) = (unsafe {
        (
            read_kernel::<u64>(vma + u64::from(offsets.vma_start)),
            read_kernel::<u64>(vma + u64::from(offsets.vma_pgoff)),
        )
    }) else {
        return 0;
    };
    let Some(mapping) = (unsafe { read_kernel::<u64>(file + u64::from(offsets.file_mapping)) })
    else {
        return 0;
    };
    let Some(inode) = (unsafe { read_kernel::<u64>(mapping + u64::from(offsets.mapping_host)) })
    else {
        return 0;
    };
    let (Some(ino), Some(sb)) = (unsafe {
        (
            read_kernel::<u64>(inode + u64::from(offsets.inode_ino)),
            read_kernel::<u64>(inode + u64::from(offsets.inode_sb)),
        )
    }) else {
        return 0;
    };
    let Some(dev) = (unsafe { read_kernel::<u32>(sb + u64::from(offsets.sb_dev)) }) else {
        return 0;
    };
    // `vm_start` is page-aligned and `vm_pgoff` counts base pages: the page's index in the
    // file times the page size, plus the offset in the page.
    query.offset = (pgoff << 12).wrapping_add(query.uaddr.wrapping_sub(start));
    query.dev = u64::from(dev);
    query.ino = ino;
    query.found = FOUND_INODE;
    0
}

/// The key of the word at `uaddr` of process `tgid` for a non-private operation.
#[inline(always)]
pub(super) fn shared_key(tgid: u32, uaddr: u64) -> FutexKey {
    let process = FutexKey::process(tgid, uaddr);
    if read_global(&KEY_OFFSETS).valid == 0 {
        count_drop(DropReason::SharedKeyFallback);
        return process;
    }
    let mut query = VmaQuery {
        uaddr,
        found: 0,
        dev: 0,
        ino: 0,
        offset: 0,
    };
    // SAFETY: the task is the current one (a trusted BTF pointer); the callback is a
    // subprogram with the signature the helper calls; the context is on this stack and
    // outlives the call; flags must be 0.
    let ret = unsafe {
        bpf_find_vma(
            bpf_get_current_task_btf(),
            uaddr,
            classify_vma as *mut c_void,
            (&raw mut query).cast(),
            0,
        )
    };
    match query.found {
        FOUND_INODE => FutexKey::inode(query.dev as u32, query.ino, query.offset),
        FOUND_PROCESS => process,
        _ => {
            // No mapping at all: the kernel fails the call with EFAULT; nothing to pair.
            if ret != ENOENT {
                count_drop(DropReason::SharedKeyFallback);
            }
            process
        }
    }
}
