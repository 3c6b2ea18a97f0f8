//! Point this process's executable (`/proc/self/exe`, the mm's exe_file) at
//! an unwritable view of the same binary without exec'ing it again.
//!
//! `prctl(PR_SET_MM_EXE_FILE)` refuses while any mapping of the old file is
//! left, so every PT_LOAD segment of the running program is replaced first,
//! at the same address: read-only segments are mapped again from the view
//! (same inode, so the same bytes and page cache), writable ones (relocated
//! data, .data, .bss) are copied into anonymous memory that is moved over
//! them. No address changes, so every pointer stays valid. This costs a few
//! syscalls and a ~300 KiB copy instead of a second process start (~1 ms on
//! the benchmark VM, the largest single cost of `berth run`).
//!
//! Must run while the process is single-threaded: another thread writing
//! .data between the copy and the move would lose its write.

use anyhow::{bail, Context, Result};
use std::ffi::{c_int, c_void};
use std::fs::File;
use std::os::fd::AsRawFd;

/// berth runs as a program mapped by the dynamic loader (`ld.so berth ...`),
/// not as the executable itself: neither switching nor re-executing
/// /proc/self/exe (ld.so) can protect it.
#[derive(Debug)]
pub struct NotKernelLoaded;

impl std::fmt::Display for NotKernelLoaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "berth must be executed directly, not through the dynamic loader: \
             it cannot protect its binary from the container otherwise",
        )
    }
}

impl std::error::Error for NotKernelLoaded {}

/// A page-aligned address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    start: usize,
    end: usize,
}

impl Range {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

/// One PT_LOAD segment of the main program, as mapped.
#[derive(Debug, PartialEq, Eq)]
struct Segment {
    range: Range,
    /// Page-aligned file offset of `range.start` (read-only segments only).
    file_offset: usize,
    prot: c_int,
    writable: bool,
}

#[derive(Debug, PartialEq, Eq)]
struct Layout {
    segments: Vec<Segment>,
    /// Made read-only again after its writable segment has been copied.
    relro: Option<Range>,
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as usize
    } else {
        4096
    }
}

fn align_down(value: usize, page: usize) -> usize {
    value & !(page - 1)
}

fn align_up(value: usize, page: usize) -> usize {
    (value + page - 1) & !(page - 1)
}

/// Load bias and program headers of the main program.
fn main_program_headers() -> Result<(usize, Vec<libc::Elf64_Phdr>)> {
    type Found = Option<(usize, Vec<libc::Elf64_Phdr>)>;
    unsafe extern "C" fn first_object(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: dl_iterate_phdr passes a valid info for the duration of
        // the call and `data` is the `Found` handed in below.
        let (info, found) = unsafe { (&*info, &mut *(data as *mut Found)) };
        let phdrs = if info.dlpi_phdr.is_null() {
            Vec::new()
        } else {
            // SAFETY: dlpi_phdr points at dlpi_phnum program headers.
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) }.to_vec()
        };
        *found = Some((info.dlpi_addr as usize, phdrs));
        1 // the main program comes first: stop
    }
    let mut found: Found = None;
    // SAFETY: the callback only reads the info it is given and writes `found`.
    unsafe { libc::dl_iterate_phdr(Some(first_object), &mut found as *mut Found as *mut c_void) };
    found.context("dl_iterate_phdr reported no main program")
}

/// Where each loadable segment of the program sits, from its headers.
fn layout(bias: usize, phdrs: &[libc::Elf64_Phdr], page: usize) -> Result<Layout> {
    let mut segments: Vec<Segment> = Vec::new();
    let mut relro = None;
    for ph in phdrs {
        let vaddr = bias + ph.p_vaddr as usize;
        let mem_end = vaddr + ph.p_memsz as usize;
        match ph.p_type {
            libc::PT_LOAD if ph.p_memsz > 0 => {
                if !(vaddr - ph.p_offset as usize).is_multiple_of(page) {
                    bail!("segment at {vaddr:#x} is not congruent with its file offset");
                }
                let writable = ph.p_flags & libc::PF_W != 0;
                if !writable && ph.p_filesz != ph.p_memsz {
                    bail!("read-only segment at {vaddr:#x} has memory beyond the file");
                }
                let mut prot = 0;
                if ph.p_flags & libc::PF_R != 0 {
                    prot |= libc::PROT_READ;
                }
                if writable {
                    prot |= libc::PROT_WRITE;
                }
                if ph.p_flags & libc::PF_X != 0 {
                    prot |= libc::PROT_EXEC;
                }
                segments.push(Segment {
                    range: Range {
                        start: align_down(vaddr, page),
                        end: align_up(mem_end, page),
                    },
                    file_offset: align_down(ph.p_offset as usize, page),
                    prot,
                    writable,
                });
            }
            // The dynamic linker (or static-pie start-up) protects the
            // whole pages inside the relro range.
            libc::PT_GNU_RELRO => {
                let range = Range {
                    start: align_down(vaddr, page),
                    end: align_down(mem_end, page),
                };
                if range.len() > 0 {
                    relro = Some(range);
                }
            }
            _ => {}
        }
    }
    if segments.is_empty() {
        bail!("main program has no loadable segments");
    }
    segments.sort_by_key(|s| s.range.start);
    // Writable segments sharing a page are copied as one range; a shared
    // page between a read-only and a writable segment has no single right
    // treatment, so such a layout is refused (the caller re-execs instead).
    let mut merged: Vec<Segment> = Vec::with_capacity(segments.len());
    for seg in segments {
        match merged.last_mut() {
            Some(prev) if seg.range.start < prev.range.end => {
                if !(prev.writable && seg.writable) {
                    bail!(
                        "segments at {:#x} and {:#x} share a page",
                        prev.range.start,
                        seg.range.start
                    );
                }
                prev.range.end = prev.range.end.max(seg.range.end);
            }
            _ => merged.push(seg),
        }
    }
    if let Some(r) = relro {
        let inside = merged
            .iter()
            .any(|s| s.writable && s.range.start <= r.start && r.end <= s.range.end);
        if !inside {
            bail!(
                "relro range {:#x}..{:#x} is not inside a writable segment",
                r.start,
                r.end
            );
        }
    }
    Ok(Layout {
        segments: merged,
        relro,
    })
}

/// Map `seg` again from `file` at the same address.
fn remap_from(file: &File, seg: &Segment) -> Result<()> {
    // SAFETY: replaces the segment with the same bytes from the same inode
    // at the same address and protection; code running from it continues
    // with identical instructions.
    let addr = unsafe {
        libc::mmap(
            seg.range.start as *mut c_void,
            seg.range.len(),
            seg.prot,
            libc::MAP_PRIVATE | libc::MAP_FIXED,
            file.as_raw_fd(),
            seg.file_offset as libc::off_t,
        )
    };
    if addr == libc::MAP_FAILED || addr as usize != seg.range.start {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!("map segment {:#x} from the read-only view", seg.range.start)
        });
    }
    Ok(())
}

/// Replace `range` by an anonymous copy of its current contents.
fn replace_with_copy(range: Range) -> Result<()> {
    let len = range.len();
    // SAFETY: a fresh anonymous mapping; MAP_POPULATE allocates its pages in
    // one go instead of a fault per page during the copy.
    let copy = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
            -1,
            0,
        )
    };
    if copy == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error()).context("allocate copy of writable segment");
    }
    // From here to the mremap nothing may write to `range` (no allocation,
    // no formatting): such a write would be lost with the old pages.
    // SAFETY: `range` is mapped readable (every page of a loaded writable
    // segment, relro included) and `copy` is a distinct mapping of `len`.
    unsafe { std::ptr::copy_nonoverlapping(range.start as *const u8, copy as *mut u8, len) };
    // SAFETY: moves our private copy over the original pages atomically.
    let moved = unsafe {
        libc::mremap(
            copy,
            len,
            len,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            range.start as *mut c_void,
        )
    };
    if moved == libc::MAP_FAILED {
        let err = std::io::Error::last_os_error();
        // SAFETY: unmapping our own unused copy.
        unsafe { libc::munmap(copy, len) };
        return Err(err).with_context(|| format!("move copy over segment {:#x}", range.start));
    }
    Ok(())
}

fn protect(range: Range, prot: c_int) -> Result<()> {
    // SAFETY: changes protection of pages we just mapped ourselves.
    if unsafe { libc::mprotect(range.start as *mut c_void, range.len(), prot) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("protect {:#x}..{:#x}", range.start, range.end));
    }
    Ok(())
}

/// Block every signal while `f` runs: a handler writing to .data during a
/// segment copy would lose its write.
fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigset_t values are plain data initialised by sigfillset /
    // pthread_sigmask before use.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let out = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        out
    }
}

/// Make `view` (a readable fd of the running binary that cannot be
/// written) this process's executable. On error the process keeps running
/// with identical memory; only the exe link may still be the old one.
pub fn switch_exe(view: &File) -> Result<()> {
    let (bias, phdrs) = main_program_headers()?;
    let layout = layout(bias, &phdrs, page_size())?;
    let stat = std::fs::read_to_string("/proc/self/stat").context("read /proc/self/stat")?;
    let mut map = current_mm_map(&stat)?;
    // Started as `ld.so berth ...`, /proc/self/exe is the dynamic loader
    // and berth was mapped by it: re-mapping berth's segments from a view
    // of the executable would put ld.so's bytes in place of our code. The
    // code the kernel itself loaded (start_code) must be ours.
    let start_code = map.start_code as usize;
    let ours = layout.segments.iter().any(|s| {
        s.prot & libc::PROT_EXEC != 0 && s.range.start <= start_code && start_code < s.range.end
    });
    if !ours {
        return Err(NotKernelLoaded.into());
    }
    with_signals_blocked(|| -> Result<()> {
        for seg in &layout.segments {
            if seg.writable {
                replace_with_copy(seg.range)?;
            } else {
                remap_from(view, seg)?;
            }
        }
        if let Some(relro) = layout.relro {
            protect(relro, libc::PROT_READ)?;
        }
        Ok(())
    })?;
    set_exe_file(view, &mut map)
}

/// `struct prctl_mm_map` from linux/prctl.h.
#[repr(C)]
#[derive(Debug, Default)]
struct PrctlMmMap {
    start_code: u64,
    end_code: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    brk: u64,
    start_stack: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
    auxv: u64,
    auxv_size: u32,
    exe_fd: u32,
}

/// The mm fields PR_SET_MM_MAP rewrites, as they are now, from
/// /proc/self/stat (fields 26–28 and 45–51) and brk(0).
fn current_mm_map(stat: &str) -> Result<PrctlMmMap> {
    // Fields after the command name, which may itself contain ") ".
    let rest = stat
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .context("malformed /proc/self/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state).
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .with_context(|| format!("/proc/self/stat has no field {n}"))?
            .parse::<u64>()
            .with_context(|| format!("/proc/self/stat field {n}"))
    };
    Ok(PrctlMmMap {
        start_code: field(26)?,
        end_code: field(27)?,
        start_stack: field(28)?,
        start_data: field(45)?,
        end_data: field(46)?,
        start_brk: field(47)?,
        arg_start: field(48)?,
        arg_end: field(49)?,
        env_start: field(50)?,
        env_end: field(51)?,
        ..Default::default()
    })
}

/// Point the mm's exe_file at `view`. PR_SET_MM_MAP rather than
/// PR_SET_MM_EXE_FILE: the latter needs CAP_SYS_RESOURCE, which container
/// hosts often withhold, the former CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE.
/// Every other field is passed back unchanged (auxv_size 0 keeps auxv).
fn set_exe_file(view: &File, map: &mut PrctlMmMap) -> Result<()> {
    // SAFETY: brk(0) only reports the current program break.
    map.brk = unsafe { libc::syscall(libc::SYS_brk, 0usize) } as u64;
    map.exe_fd = view.as_raw_fd() as u32;
    // SAFETY: PR_SET_MM_MAP reads a prctl_mm_map of the size we pass; the
    // kernel refuses while any mapping of the old executable is left.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_MM,
            libc::PR_SET_MM_MAP,
            map as *const PrctlMmMap as libc::c_ulong,
            std::mem::size_of::<PrctlMmMap>() as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("prctl(PR_SET_MM_MAP, exe_fd)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(vaddr: u64, offset: u64, filesz: u64, memsz: u64, flags: u32) -> libc::Elf64_Phdr {
        libc::Elf64_Phdr {
            p_type: libc::PT_LOAD,
            p_flags: flags,
            p_offset: offset,
            p_vaddr: vaddr,
            p_paddr: vaddr,
            p_filesz: filesz,
            p_memsz: memsz,
            p_align: 0x1000,
        }
    }

    fn relro(vaddr: u64, memsz: u64) -> libc::Elf64_Phdr {
        libc::Elf64_Phdr {
            p_type: libc::PT_GNU_RELRO,
            p_memsz: memsz,
            p_filesz: memsz,
            p_offset: vaddr,
            p_vaddr: vaddr,
            ..load(0, 0, 0, 0, libc::PF_R)
        }
    }

    #[test]
    fn layout_of_a_static_pie_with_separate_relro_segment() {
        // The program headers of berth built as static-pie by binutils 2.40.
        let phdrs = [
            load(0, 0, 0xe9230, 0xe9230, libc::PF_R),
            load(
                0xea240,
                0xe9240,
                0x3700f0,
                0x3700f0,
                libc::PF_R | libc::PF_X,
            ),
            load(
                0x45b330,
                0x459330,
                0x49c70,
                0x49cd0,
                libc::PF_R | libc::PF_W,
            ),
            load(0x4a5fa0, 0x4a2fa0, 0x2d70, 0x91c8, libc::PF_R | libc::PF_W),
            relro(0x45b330, 0x49cd0),
        ];
        let bias = 0x5555_0000_0000;
        let l = layout(bias, &phdrs, 0x1000).unwrap();
        let r = |s: usize, e: usize| Range {
            start: bias + s,
            end: bias + e,
        };
        assert_eq!(l.segments.len(), 4, "{l:?}");
        assert_eq!(l.segments[0].range, r(0, 0xea000));
        assert!(!l.segments[0].writable);
        assert_eq!(l.segments[1].range, r(0xea000, 0x45b000));
        assert_eq!(l.segments[1].file_offset, 0xe9000);
        assert_eq!(l.segments[1].prot, libc::PROT_READ | libc::PROT_EXEC);
        assert_eq!(l.segments[2].range, r(0x45b000, 0x4a5000));
        assert!(l.segments[2].writable);
        assert_eq!(l.segments[3].range, r(0x4a5000, 0x4b0000));
        assert_eq!(l.relro, Some(r(0x45b000, 0x4a5000)));
    }

    #[test]
    fn mm_map_fields_come_from_the_right_stat_columns() {
        // Field n holds the value n; the command name contains ") ".
        let rest: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        let stat = format!("1234 (a) b) {}\n", rest.join(" "));
        let m = current_mm_map(&stat).unwrap();
        assert_eq!((m.start_code, m.end_code, m.start_stack), (26, 27, 28));
        assert_eq!((m.start_data, m.end_data, m.start_brk), (45, 46, 47));
        assert_eq!(
            (m.arg_start, m.arg_end, m.env_start, m.env_end),
            (48, 49, 50, 51)
        );
        assert_eq!(std::mem::size_of::<PrctlMmMap>(), 104);
    }

    #[test]
    fn writable_segments_sharing_a_page_are_copied_as_one() {
        let phdrs = [
            load(0, 0, 0x1000, 0x1000, libc::PF_R | libc::PF_X),
            load(0x1000, 0x1000, 0x800, 0x800, libc::PF_R | libc::PF_W),
            load(0x1800, 0x1800, 0x100, 0x3000, libc::PF_R | libc::PF_W),
            relro(0x1000, 0x800),
        ];
        let l = layout(0, &phdrs, 0x1000).unwrap();
        assert_eq!(l.segments.len(), 2, "{l:?}");
        assert_eq!(
            l.segments[1].range,
            Range {
                start: 0x1000,
                end: 0x5000
            }
        );
        // relro ends mid-page: only whole pages are protected.
        assert_eq!(l.relro, None);
    }

    #[test]
    fn layout_refuses_a_page_shared_by_read_only_and_writable_segments() {
        let phdrs = [
            load(0, 0, 0x1800, 0x1800, libc::PF_R | libc::PF_X),
            load(0x1800, 0x1800, 0x100, 0x200, libc::PF_R | libc::PF_W),
        ];
        let err = layout(0, &phdrs, 0x1000).unwrap_err();
        assert!(err.to_string().contains("share a page"), "{err:#}");
    }

    #[test]
    fn layout_refuses_read_only_segment_with_bss() {
        let phdrs = [load(0, 0, 0x100, 0x2000, libc::PF_R)];
        assert!(layout(0, &phdrs, 0x1000).is_err());
    }

    #[test]
    fn headers_of_this_test_binary_give_a_usable_layout() {
        let (bias, phdrs) = main_program_headers().unwrap();
        let l = layout(bias, &phdrs, page_size()).unwrap();
        assert!(l.segments.iter().any(|s| s.prot & libc::PROT_EXEC != 0));
        assert!(l.segments.iter().any(|s| s.writable));
        // The function we are running sits inside an executable segment.
        let here = headers_of_this_test_binary_give_a_usable_layout as *const () as usize;
        assert!(l
            .segments
            .iter()
            .any(|s| s.prot & libc::PROT_EXEC != 0 && s.range.start <= here && here < s.range.end));
    }
}
