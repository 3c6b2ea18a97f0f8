//! cgroup v2 device control: v2 has no devices.allow/deny files, so access is decided by a
//! BPF_PROG_TYPE_CGROUP_DEVICE program attached to the cgroup. We generate the program from
//! the OCI rules and drive bpf(2) directly (no libbpf needed for this tiny program).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use anyhow::{anyhow, bail, Result};

use crate::devices::Rule;
use crate::fsutil;

// bpf(2) commands, program/attach types and flags from <linux/bpf.h>.
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

// Device types and access bits of struct bpf_cgroup_dev_ctx.access_type.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

/// struct bpf_insn.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high nibble.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

// Opcodes used (class | op | source).
const LDX_MEM_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const ALU32_MOV_X: u8 = 0xbc;
const ALU64_MOV_K: u8 = 0xb7;
const JMP_JNE_K: u8 = 0x55;
const JMP_JEQ_K: u8 = 0x15;
const JMP_EXIT: u8 = 0x95;

fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |acc, c| {
        acc | match c {
            'm' => ACC_MKNOD,
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            _ => 0,
        }
    })
}

/// Builds the filter. Registers after the prologue: r2 = device type, r3 = requested access,
/// r4 = major, r5 = minor. Rules are checked last-to-first and the first match decides, which
/// gives OCI's "later rules override earlier ones"; no match means deny.
pub(crate) fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        // Each conditional jump is emitted with off = "skip to the end of this block",
        // patched once the block length is known (marked with i16::MIN).
        let mut block: Vec<Insn> = Vec::new();
        match r.kind {
            'b' => block.push(insn(JMP_JNE_K, 2, 0, i16::MIN, DEV_BLOCK)),
            'c' => block.push(insn(JMP_JNE_K, 2, 0, i16::MIN, DEV_CHAR)),
            _ => {}
        }
        let bits = access_bits(&r.access);
        if bits != ACC_MKNOD | ACC_READ | ACC_WRITE {
            block.push(insn(ALU32_MOV_X, 0, 3, 0, 0));
            if r.allow {
                // An allow rule matches only if every requested access is granted by it.
                block.push(insn(ALU32_AND_K, 0, 0, 0, !bits & 7));
                block.push(insn(JMP_JNE_K, 0, 0, i16::MIN, 0));
            } else {
                // A deny rule matches if any requested access is one it denies.
                block.push(insn(ALU32_AND_K, 0, 0, 0, bits));
                block.push(insn(JMP_JEQ_K, 0, 0, i16::MIN, 0));
            }
        }
        if let Some(m) = r.major {
            block.push(insn(JMP_JNE_K, 4, 0, i16::MIN, m as i32));
        }
        if let Some(m) = r.minor {
            block.push(insn(JMP_JNE_K, 5, 0, i16::MIN, m as i32));
        }
        block.push(insn(ALU64_MOV_K, 0, 0, 0, i32::from(r.allow)));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let n = block.len();
        let unconditional = n == 2;
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.off == i16::MIN {
                ins.off = (n - i - 1) as i16;
            }
        }
        p.extend(block);
        // A rule matching every access decides everything: code after it would be
        // unreachable, which the verifier rejects.
        if unconditional {
            return p;
        }
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: attr is a properly sized, initialized #[repr(C)] prefix of union bpf_attr; the
    // kernel reads/writes at most size_of::<T>() bytes of it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn to_fd(r: libc::c_long) -> OwnedFd {
    // SAFETY: bpf(2) returned a fresh file descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

fn load(insns: &[Insn]) -> Result<OwnedFd> {
    let license = b"Apache\0";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    attr.prog_name[..12].copy_from_slice(b"berth_device");
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(to_fd(fd)),
        Err(first) => {
            // Retry with the verifier log so the error says why.
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            match bpf(BPF_PROG_LOAD, &mut attr) {
                Ok(fd) => Ok(to_fd(fd)),
                Err(_) => {
                    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
                    bail!(
                        "load cgroup device BPF program: {}; verifier: {}",
                        fsutil::describe(&first),
                        String::from_utf8_lossy(&log[..end]).trim()
                    )
                }
            }
        }
    }
}

/// IDs of the device programs currently attached to the cgroup.
fn query(cg_fd: &File) -> Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: cg_fd.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr)
        .map_err(|e| anyhow!("query cgroup device BPF programs: {}", fsutil::describe(&e)))?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

/// Attaches a program for `rules` to the v2 cgroup `dir`, then detaches the programs that were
/// there before, so the cgroup is never left without a filter during an update.
pub(crate) fn replace_device_filter(dir: &Path, rules: &[Rule]) -> Result<()> {
    let cg = File::open(dir)
        .map_err(|e| anyhow!("open cgroup {}: {}", dir.display(), fsutil::describe(&e)))?;
    let old = query(&cg)?;
    let prog = load(&program(rules))?;
    let mut attr = AttachAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|e| {
        anyhow!(
            "attach device BPF program to {}: {}",
            dir.display(),
            fsutil::describe(&e)
        )
    })?;
    for id in old {
        let mut get = GetFdByIdAttr {
            prog_id: id,
            ..Default::default()
        };
        let old_fd = match bpf(BPF_PROG_GET_FD_BY_ID, &mut get) {
            Ok(fd) => to_fd(fd),
            // Already gone.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => bail!("get BPF program {id}: {}", fsutil::describe(&e)),
        };
        let mut det = AttachAttr {
            target_fd: cg.as_raw_fd() as u32,
            attach_bpf_fd: old_fd.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        match bpf(BPF_PROG_DETACH, &mut det) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => bail!(
                "detach old device BPF program {id} from {}: {}",
                dir.display(),
                fsutil::describe(&e)
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(allow: bool, kind: char, major: Option<i64>, minor: Option<i64>, a: &str) -> Rule {
        Rule {
            allow,
            kind,
            major,
            minor,
            access: a.to_string(),
        }
    }

    #[test]
    fn jump_offsets_skip_to_next_rule() {
        let p = program(&[rule(true, 'c', Some(1), Some(3), "rwm")]);
        // prologue(6) + [jne type, jne major, jne minor, mov, exit] + [mov, exit]
        assert_eq!(p.len(), 6 + 5 + 2);
        assert_eq!(p[6], insn(JMP_JNE_K, 2, 0, 4, DEV_CHAR));
        assert_eq!(p[7], insn(JMP_JNE_K, 4, 0, 3, 1));
        assert_eq!(p[8], insn(JMP_JNE_K, 5, 0, 2, 3));
        assert_eq!(p[9], insn(ALU64_MOV_K, 0, 0, 0, 1));
        assert_eq!(p[12], insn(JMP_EXIT, 0, 0, 0, 0));
    }

    #[test]
    fn last_rule_is_checked_first() {
        let p = program(&[
            rule(false, 'a', None, None, "rwm"),
            rule(true, 'b', Some(8), None, "r"),
        ]);
        // The 'b' rule (last) comes right after the prologue.
        // [jne type, mov r0=r3, and, jne r0, jne major, mov, exit]
        assert_eq!(p[6], insn(JMP_JNE_K, 2, 0, 6, DEV_BLOCK));
        assert_eq!(p[8], insn(ALU32_AND_K, 0, 0, 0, ACC_MKNOD | ACC_WRITE));
        // Deny-all rule: unconditional r0 = 0, and nothing after it.
        assert_eq!(p[13], insn(ALU64_MOV_K, 0, 0, 0, 0));
        assert_eq!(p.len(), 6 + 7 + 2);
    }
}
