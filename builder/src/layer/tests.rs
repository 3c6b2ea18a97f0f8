use super::diff::write_tar;
use super::*;
use nix::sys::stat::{mknod, Mode, SFlag};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

fn entries(tar: &[u8]) -> Vec<(String, tar::EntryType, String)> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default();
            (
                e.path().unwrap().to_string_lossy().into_owned(),
                e.header().entry_type(),
                link,
            )
        })
        .collect()
}

fn sample_upper(dir: &Path) {
    fs::create_dir_all(dir.join("b/opq")).unwrap();
    fs::write(dir.join("b/file"), b"hello").unwrap();
    fs::hard_link(dir.join("b/file"), dir.join("a-link")).unwrap();
    symlink("/bin/busybox", dir.join("sh")).unwrap();
    mknod(&dir.join("gone"), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
    xattr::set(dir.join("b/opq"), diff::OPAQUE_XATTR, b"y").unwrap();
    fs::write(dir.join("b/opq/new"), b"n").unwrap();
    let long = "x".repeat(150);
    fs::write(dir.join(&long), b"long").unwrap();
}

#[test]
fn upper_dir_becomes_sorted_tar_with_oci_whiteouts() {
    let d = tempfile::tempdir().unwrap();
    sample_upper(d.path());
    let (tar, diff_id) = write_tar(d.path(), Vec::new(), None).unwrap();
    assert_eq!(diff_id, crate::digest::sha256_of(&tar));
    let names = entries(&tar);
    let just: Vec<&str> = names.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(just, sorted_expected());
    // The second name of a hardlinked file is a link entry.
    let link = names.iter().find(|(n, _, _)| n == "b/file").unwrap();
    assert_eq!(link.1, tar::EntryType::Link);
    assert_eq!(link.2, "a-link");
    let sh = names.iter().find(|(n, _, _)| n == "sh").unwrap();
    assert_eq!(
        (sh.1, sh.2.as_str()),
        (tar::EntryType::Symlink, "/bin/busybox")
    );
}

fn sorted_expected() -> Vec<String> {
    // Byte order at each directory level: '.' < 'a' < 'b' < 'g' < 's' < 'x'.
    vec![
        "a-link".into(),
        "b/".into(),
        "b/file".into(),
        "b/opq/".into(),
        "b/opq/.wh..wh..opq".into(),
        "b/opq/new".into(),
        ".wh.gone".into(),
        "sh".into(),
        "x".repeat(150),
    ]
}

#[test]
fn tar_is_deterministic_and_ignores_subsecond_mtime() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    for d in [d1.path(), d2.path()] {
        fs::create_dir(d.join("dir")).unwrap();
        fs::write(d.join("dir/f"), b"same").unwrap();
    }
    let set = |p: &Path, ns: i64| {
        let t = nix::sys::time::TimeSpec::new(1_700_000_000, ns);
        nix::sys::stat::utimensat(
            None,
            p,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    };
    set(&d1.path().join("dir/f"), 1);
    set(&d2.path().join("dir/f"), 999_999);
    set(&d1.path().join("dir"), 0);
    set(&d2.path().join("dir"), 5);
    let (_, a) = write_tar(d1.path(), Vec::new(), None).unwrap();
    let (_, b) = write_tar(d2.path(), Vec::new(), None).unwrap();
    assert_eq!(a, b);
    // SOURCE_DATE_EPOCH clamps mtimes.
    let (t, _) = write_tar(d1.path(), Vec::new(), Some(10)).unwrap();
    let mut ar = tar::Archive::new(&t[..]);
    for e in ar.entries().unwrap() {
        assert_eq!(e.unwrap().header().mtime().unwrap(), 10);
    }
}

#[test]
fn layer_blob_digest_and_diff_id_in_one_pass() {
    let root = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(root.path()).unwrap();
    let up = tempfile::tempdir().unwrap();
    sample_upper(up.path());
    for c in [Compression::Gzip, Compression::Zstd] {
        let l = write_layer(&store, up.path(), c, None).unwrap();
        let blob = store.read_blob(&l.descriptor.digest).unwrap();
        assert_eq!(crate::digest::sha256_of(&blob), l.descriptor.digest);
        assert_eq!(blob.len() as u64, l.descriptor.size);
        let mut raw = Vec::new();
        open_decompressed(&store.blob_path(&l.descriptor.digest).unwrap())
            .unwrap()
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(crate::digest::sha256_of(&raw), l.diff_id);
        assert_eq!(l.descriptor.media_type, c.media_type());
    }
}

#[test]
fn roundtrip_overlay_format_and_apply() {
    let up = tempfile::tempdir().unwrap();
    sample_upper(up.path());
    fs::set_permissions(up.path().join("b/file"), fs::Permissions::from_mode(0o4755)).unwrap();
    let (tar, _) = write_tar(up.path(), Vec::new(), None).unwrap();

    // Overlay format reproduces the upper dir, whiteouts included.
    let snap = tempfile::tempdir().unwrap();
    unpack(&tar[..], snap.path(), UnpackMode::Overlay).unwrap();
    let wh = fs::symlink_metadata(snap.path().join("gone")).unwrap();
    assert_eq!(wh.rdev(), 0);
    assert_eq!(
        xattr::get(snap.path().join("b/opq"), diff::OPAQUE_XATTR)
            .unwrap()
            .unwrap(),
        b"y"
    );
    let m = fs::metadata(snap.path().join("b/file")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4755);
    assert_eq!(m.nlink(), 2);
    let (tar2, _) = write_tar(snap.path(), Vec::new(), None).unwrap();
    assert_eq!(entries(&tar), entries(&tar2));

    // Apply mode deletes whited-out files and opaque dirs' old content.
    let rootfs = tempfile::tempdir().unwrap();
    fs::write(rootfs.path().join("gone"), b"old").unwrap();
    fs::create_dir_all(rootfs.path().join("b/opq")).unwrap();
    fs::write(rootfs.path().join("b/opq/old"), b"old").unwrap();
    unpack(&tar[..], rootfs.path(), UnpackMode::Apply).unwrap();
    assert!(!rootfs.path().join("gone").exists());
    assert!(!rootfs.path().join("b/opq/old").exists());
    assert_eq!(fs::read(rootfs.path().join("b/opq/new")).unwrap(), b"n");
    assert_eq!(
        fs::read(rootfs.path().join("x".repeat(150))).unwrap(),
        b"long"
    );
}

/// Builds a tar with raw names, bypassing the tar crate's own path checks.
fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in entries {
        let mut h = tar::Header::new_gnu();
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64);
        if !link.is_empty() {
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn hostile_archives_are_refused_and_write_nothing_outside() {
    use tar::EntryType::*;
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("root");
    fs::create_dir(&root).unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (raw_tar(&[("../escape", Regular, "", b"x")]), ".."),
        (raw_tar(&[("/abs", Regular, "", b"x")]), "absolute"),
        (
            raw_tar(&[
                ("evil", Symlink, "..", b""),
                ("evil/escape", Regular, "", b"x"),
            ]),
            "symlink",
        ),
        (
            raw_tar(&[
                ("abs", Symlink, outer.path().to_str().unwrap(), b""),
                ("abs/escape", Regular, "", b"x"),
            ]),
            "symlink",
        ),
        (raw_tar(&[("hl", Link, "../escape", b"")]), ".."),
        (
            raw_tar(&[("l", Symlink, "..", b""), ("hl", Link, "l/escape", b"")]),
            "symlink",
        ),
    ];
    for (tar, why) in cases {
        let err = unpack(&tar[..], &root, UnpackMode::Apply).unwrap_err();
        assert!(
            format!("{err:#}").contains(why),
            "{err:#} should mention {why}"
        );
        assert!(!outer.path().join("escape").exists());
    }
}

#[test]
fn replaced_directory_keeps_the_final_pass_inside_the_root() {
    // `d/` (mode 0644 from raw_tar) then `d -> <outside>`: the pass that
    // restores directory modes must not chmod or touch the symlink's target.
    let outer = tempfile::tempdir().unwrap();
    let canary = outer.path().join("canary");
    fs::create_dir(&canary).unwrap();
    fs::set_permissions(&canary, fs::Permissions::from_mode(0o700)).unwrap();
    let before = fs::metadata(&canary).unwrap();
    for mode in [UnpackMode::Apply, UnpackMode::Overlay] {
        let root = tempfile::tempdir().unwrap();
        let tar = raw_tar(&[
            ("d/", tar::EntryType::Directory, "", b""),
            ("d", tar::EntryType::Symlink, canary.to_str().unwrap(), b""),
            // A hardlink to that symlink links the symlink, not the target.
            ("hl", tar::EntryType::Link, "d", b""),
        ]);
        unpack(&tar[..], root.path(), mode).unwrap();
        let after = fs::metadata(&canary).unwrap();
        assert_eq!(after.mode(), before.mode(), "{mode:?}: canary mode changed");
        assert_eq!(
            after.mtime(),
            before.mtime(),
            "{mode:?}: canary mtime changed"
        );
        assert!(fs::symlink_metadata(root.path().join("hl"))
            .unwrap()
            .file_type()
            .is_symlink());
    }
}

#[test]
fn device_nodes_and_whiteouts_stay_inside_the_root() {
    let outer = tempfile::tempdir().unwrap();
    let victim = outer.path().join("victim");
    fs::write(&victim, b"keep").unwrap();
    let root = tempfile::tempdir().unwrap();
    let tar = raw_tar(&[
        (
            "l",
            tar::EntryType::Symlink,
            outer.path().to_str().unwrap(),
            b"",
        ),
        // A whiteout through a symlinked parent is refused, not followed.
        ("l/.wh.victim", tar::EntryType::Regular, "", b""),
    ]);
    assert!(unpack(&tar[..], root.path(), UnpackMode::Apply).is_err());
    assert!(victim.exists());
    let tar = raw_tar(&[
        (
            "l",
            tar::EntryType::Symlink,
            outer.path().to_str().unwrap(),
            b"",
        ),
        ("l/null", tar::EntryType::Char, "", b""),
    ]);
    assert!(unpack(&tar[..], root.path(), UnpackMode::Apply).is_err());
    assert!(!outer.path().join("null").exists());
    // A node replacing a symlink replaces the link itself.
    let tar = raw_tar(&[
        ("v", tar::EntryType::Symlink, victim.to_str().unwrap(), b""),
        ("v", tar::EntryType::Fifo, "", b""),
    ]);
    unpack(&tar[..], root.path(), UnpackMode::Apply).unwrap();
    assert_eq!(fs::read(&victim).unwrap(), b"keep");
    assert!(fs::symlink_metadata(root.path().join("v"))
        .unwrap()
        .file_type()
        .is_fifo());
}
