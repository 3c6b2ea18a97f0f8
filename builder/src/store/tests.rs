use super::*;
use crate::image::{ImageConfig, MEDIA_LAYER_GZIP};
use std::io::Write;

fn layer(store: &Store, data: &[u8]) -> Descriptor {
    let digest = store.put_blob(data).unwrap();
    Descriptor {
        media_type: MEDIA_LAYER_GZIP.into(),
        digest,
        size: data.len() as u64,
        annotations: BTreeMap::new(),
        platform: None,
    }
}

#[test]
fn open_creates_an_oci_layout() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let layout: serde_json::Value =
        serde_json::from_slice(&fs::read(d.path().join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    assert_eq!(s.index().unwrap().schema_version, 2);
    assert!(s.index().unwrap().manifests.is_empty());
}

#[test]
fn commit_tag_resolve_remove_prune() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let l = layer(&s, b"layer-bytes");
    let mut cfg = ImageConfig::default();
    cfg.rootfs.diff_ids.push(crate::digest::sha256_of(b"diff"));
    let desc = s
        .commit_image(&cfg, vec![l.clone()], &["app".into()])
        .unwrap();
    let r = s.resolve("app").unwrap();
    assert_eq!(r.descriptor.digest, desc.digest);
    assert_eq!(r.config, cfg);
    assert_eq!(
        s.resolve(&desc.digest[7..19]).unwrap().descriptor.digest,
        desc.digest
    );

    s.tag("app:latest", "app:v2").unwrap();
    let imgs = s.images().unwrap();
    assert_eq!(imgs.len(), 1);
    assert_eq!(imgs[0].tags, vec!["app:latest", "app:v2"]);

    // An orphan blob goes away on prune, reachable ones stay.
    let orphan = s.put_blob(b"orphan").unwrap();
    let rep = s.prune().unwrap();
    assert_eq!(rep.removed_blobs, 1);
    assert!(!s.has_blob(&orphan));
    assert!(s.has_blob(&l.digest));

    s.remove("app").unwrap();
    assert!(s.resolve("app").is_err());
    assert!(s.resolve("app:v2").is_ok());
    s.remove("app:v2").unwrap();
    let rep = s.prune().unwrap();
    assert_eq!(rep.removed_blobs, 3, "manifest, config and layer");
    assert!(s.remove("app:v2").is_err());
}

#[test]
fn retagging_moves_the_name() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let a = s
        .commit_image(&ImageConfig::default(), vec![], &["x".into()])
        .unwrap();
    let mut cfg = ImageConfig::default();
    cfg.config.user = "1".into();
    let b = s.commit_image(&cfg, vec![], &["x".into()]).unwrap();
    assert_ne!(a.digest, b.digest);
    assert_eq!(s.resolve("x").unwrap().descriptor.digest, b.digest);
    assert_eq!(s.index().unwrap().manifests.len(), 1);
}

#[test]
fn commit_refuses_missing_layers_and_leaves_index_alone() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let mut l = layer(&s, b"x");
    l.digest = crate::digest::sha256_of(b"not stored");
    assert!(s
        .commit_image(&ImageConfig::default(), vec![l], &["y".into()])
        .is_err());
    assert!(s.index().unwrap().manifests.is_empty());
}

#[test]
fn blob_writer_checks_expected_digest() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let mut w = s.blob_writer().unwrap();
    w.write_all(b"abc").unwrap();
    assert!(w.commit(Some(&crate::digest::sha256_of(b"xyz"))).is_err());
    assert_eq!(
        fs::read_dir(d.path().join("blobs/sha256")).unwrap().count(),
        0
    );
}

#[test]
fn cache_entries_need_their_blob() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let l = layer(&s, b"z");
    let key = crate::digest::sha256_of(b"key");
    let e = CacheEntry {
        layer: Some(CachedLayer {
            descriptor: l,
            diff_id: crate::digest::sha256_of(b"d"),
        }),
        created: "2024-01-01T00:00:00Z".into(),
    };
    s.cache_put(&key, &e).unwrap();
    assert_eq!(s.cache_get(&key), Some(e));
    s.prune().unwrap();
    assert_eq!(s.cache_get(&key), None);
}

#[test]
fn work_dirs_of_dead_owners_are_cleaned_on_open() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let live = s.temp_dir("live-").unwrap();
    fs::write(live.path().join("f"), b"x").unwrap();
    // A dead owner's dir: a lock file nobody holds.
    let dead = d.path().join("tmp/dead-123");
    fs::create_dir(&dead).unwrap();
    fs::write(d.path().join("tmp/dead-123.lock"), b"").unwrap();
    let _again = Store::open(d.path()).unwrap();
    assert!(live.path().join("f").exists(), "a live work dir is kept");
    assert!(!dead.exists(), "a dead owner's work dir is removed");
    let live_path = live.path().to_path_buf();
    drop(live);
    assert!(!live_path.exists());
    assert_eq!(fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
}

#[test]
fn names_cannot_stand_in_for_digests() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let mut a_cfg = ImageConfig::default();
    a_cfg.rootfs.diff_ids.push(crate::digest::sha256_of(b"a"));
    let a = s
        .commit_image(&a_cfg, vec![layer(&s, b"a")], &["a".into()])
        .unwrap();
    let mut b_cfg = ImageConfig::default();
    b_cfg.rootfs.diff_ids.push(crate::digest::sha256_of(b"b"));
    let b = s
        .commit_image(&b_cfg, vec![layer(&s, b"b")], &["b".into()])
        .unwrap();
    for bad in [
        a.digest.clone(),
        a.digest["sha256:".len()..].to_string(),
        "../../../../etc/passwd:latest".to_string(),
        format!("x@{}", a.digest),
    ] {
        let e = s.tag("b", &bad).unwrap_err();
        assert!(
            e.chain().any(|c| c.is::<InvalidReference>()),
            "{bad}: {e:#}"
        );
    }
    assert!(s
        .commit_image(
            &b_cfg,
            vec![layer(&s, b"b")],
            std::slice::from_ref(&a.digest)
        )
        .is_err());

    // Even a digest-shaped name left in the index by an older berth does
    // not capture lookups by digest.
    let mut index = s.index().unwrap();
    let mut forged = b.clone();
    forged
        .annotations
        .insert(ANNOTATION_REF_NAME.into(), a.digest.clone());
    index.manifests.push(forged);
    s.write_index(&index).unwrap();
    assert_eq!(s.resolve(&a.digest).unwrap().descriptor.digest, a.digest);
    assert_eq!(
        s.resolve(&a.digest["sha256:".len()..])
            .unwrap()
            .descriptor
            .digest,
        a.digest
    );
    assert_eq!(
        s.resolve(&format!("a@{}", a.digest))
            .unwrap()
            .descriptor
            .digest,
        a.digest
    );
    assert_eq!(s.resolve("b").unwrap().descriptor.digest, b.digest);
    let e = s.resolve("../x").unwrap_err();
    assert!(
        format!("{e:#}").contains("invalid reference format"),
        "{e:#}"
    );
}

#[test]
fn listing_uses_summaries_and_configs_are_capped() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let mut cfg = ImageConfig {
        created: Some("2024-01-02T03:04:05Z".into()),
        ..Default::default()
    };
    cfg.rootfs.diff_ids.push(crate::digest::sha256_of(b"l"));
    let l = layer(&s, b"l");
    let desc = s
        .commit_image(&cfg, vec![l.clone()], &["app".into()])
        .unwrap();
    let list = s.image_summaries().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].digest, desc.digest);
    assert_eq!(list[0].tags, vec!["app:latest"]);
    assert_eq!(list[0].created, "2024-01-02T03:04:05Z");
    let m: Manifest = s.read_json(&desc.digest).unwrap();
    assert_eq!(list[0].size, l.size + m.config.size);
    // Listing does not read the config: it still works with the config gone.
    fs::remove_file(s.blob_path(&m.config.digest).unwrap()).unwrap();
    assert_eq!(s.image_summaries().unwrap(), list);

    // A config over the cap is refused when written.
    let mut big = ImageConfig::default();
    big.config.labels.insert(
        "x".into(),
        "y".repeat(crate::image::MAX_CONFIG_SIZE as usize),
    );
    let e = s
        .commit_image(&big, Vec::new(), &["big".into()])
        .unwrap_err();
    assert!(e.chain().any(|c| c.is::<crate::image::TooLarge>()), "{e:#}");
    // Prune drops summaries of images that are gone.
    s.remove("app").unwrap();
    s.prune().unwrap();
    assert_eq!(fs::read_dir(d.path().join("summaries")).unwrap().count(), 0);
}

#[test]
fn an_old_image_with_an_oversized_config_is_listed_not_loaded() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let mut cfg = ImageConfig::default();
    cfg.rootfs.diff_ids.push(crate::digest::sha256_of(b"l"));
    let l = layer(&s, b"l");
    let ok = s
        .commit_image(&cfg, vec![l.clone()], &["ok".into()])
        .unwrap();
    // What an older berth could store: a config over the cap, no summary.
    let mut big = cfg.clone();
    big.config.labels.insert(
        "pad".into(),
        "y".repeat(crate::image::MAX_CONFIG_SIZE as usize),
    );
    let big_bytes = serde_json::to_vec(&big).unwrap();
    let big_digest = s.put_blob(&big_bytes).unwrap();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(crate::image::MEDIA_MANIFEST.into()),
        config: Descriptor {
            media_type: crate::image::MEDIA_CONFIG.into(),
            digest: big_digest,
            size: big_bytes.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        },
        layers: vec![l.clone()],
        annotations: BTreeMap::new(),
    };
    let m_bytes = serde_json::to_vec(&manifest).unwrap();
    let m_digest = s.put_blob(&m_bytes).unwrap();
    let mut index = s.index().unwrap();
    let mut desc = ok.clone();
    desc.digest = m_digest.clone();
    desc.size = m_bytes.len() as u64;
    desc.annotations
        .insert(ANNOTATION_REF_NAME.into(), "old:latest".into());
    index.manifests.push(desc);
    s.write_index(&index).unwrap();

    let list = s.image_summaries().unwrap();
    assert_eq!(list.len(), 2);
    let old = list.iter().find(|i| i.digest == m_digest).unwrap();
    assert_eq!(old.size, l.size + big_bytes.len() as u64);
    let e = s.resolve("old").unwrap_err();
    assert!(e.chain().any(|c| c.is::<crate::image::TooLarge>()), "{e:#}");
}

#[test]
fn cache_link_serves_imported_entries_and_fetches_their_layer_on_hit() {
    use std::sync::{Arc, Mutex};
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    // Another store holds the layer, as a registry would.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Store::open(other_dir.path()).unwrap();
    let remote_layer = layer(&other, b"remote-layer");
    let entry = CacheEntry {
        layer: Some(CachedLayer {
            descriptor: remote_layer.clone(),
            diff_id: crate::digest::sha256_of(b"remote-diff"),
        }),
        created: "2026-01-01T00:00:00Z".into(),
    };
    let key = crate::digest::sha256_of(b"key");
    let missing_key = crate::digest::sha256_of(b"other-key");
    let fetched = Arc::new(Mutex::new(Vec::new()));
    let log = fetched.clone();
    let (s2, other2) = (s.clone(), other.clone());
    let fetch: Box<LayerFetcher> = Box::new(move |desc: &Descriptor, _diff: &str| {
        log.lock().unwrap().push(desc.digest.clone());
        s2.put_blob(&other2.read_blob(&desc.digest)?)?;
        Ok(())
    });
    let imported = BTreeMap::from([(key.clone(), entry.clone())]);
    let link = Arc::new(CacheLink::new(imported, Some(fetch)));
    let linked = s.with_cache_link(link.clone());

    // A plain handle does not see imported entries.
    assert!(s.cache_get(&key).is_none());
    assert!(linked.cache_get(&missing_key).is_none());
    assert!(fetched.lock().unwrap().is_empty(), "no fetch without a hit");
    assert_eq!(linked.cache_get(&key), Some(entry.clone()));
    assert_eq!(*fetched.lock().unwrap(), vec![remote_layer.digest.clone()]);
    assert!(s.has_blob(&remote_layer.digest));
    // Kept locally: a plain handle now hits too, without fetching again.
    assert_eq!(s.cache_get(&key), Some(entry.clone()));
    assert_eq!(fetched.lock().unwrap().len(), 1);
    // What the build used or wrote is recorded for --cache-to.
    let own_key = crate::digest::sha256_of(b"own");
    let own = CacheEntry {
        layer: None,
        created: String::new(),
    };
    linked.cache_put(&own_key, &own).unwrap();
    let used = link.used();
    assert_eq!(used.len(), 2);
    assert_eq!(used.get(&key), Some(&entry));
    assert_eq!(used.get(&own_key), Some(&own));
}

#[test]
fn a_failed_layer_fetch_is_a_cache_miss() {
    use std::sync::Arc;
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let key = crate::digest::sha256_of(b"key");
    let entry = CacheEntry {
        layer: Some(CachedLayer {
            descriptor: Descriptor {
                media_type: MEDIA_LAYER_GZIP.into(),
                digest: crate::digest::sha256_of(b"absent"),
                size: 6,
                annotations: BTreeMap::new(),
                platform: None,
            },
            diff_id: crate::digest::sha256_of(b"diff"),
        }),
        created: String::new(),
    };
    let fetch: Box<LayerFetcher> =
        Box::new(|_: &Descriptor, _: &str| anyhow::bail!("registry refused"));
    let link = Arc::new(CacheLink::new(
        BTreeMap::from([(key.clone(), entry)]),
        Some(fetch),
    ));
    let linked = s.with_cache_link(link.clone());
    assert!(linked.cache_get(&key).is_none());
    assert!(link.used().is_empty());
    assert!(s.cache_get(&key).is_none(), "nothing was kept");
}

#[test]
fn partial_downloads_resume_through_the_hash() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let data = b"0123456789abcdef";
    let digest = crate::digest::sha256_of(data);
    let mut w = s.blob_writer().unwrap();
    w.write_all(&data[..7]).unwrap();
    assert_eq!(w.keep_partial(&digest).unwrap(), 7);
    assert!(!s.has_blob(&digest));
    let (mut w, n) = s
        .resume_writer(&digest, data.len() as u64)
        .unwrap()
        .unwrap();
    assert_eq!(n, 7);
    w.write_all(&data[7..]).unwrap();
    assert_eq!(w.commit(Some(&digest)).unwrap(), (digest.clone(), 16));
    assert!(s.resume_writer(&digest, 16).unwrap().is_none(), "consumed");
    // A partial as long as the blob (or longer) is dropped, not resumed.
    let mut w = s.blob_writer().unwrap();
    w.write_all(data).unwrap();
    w.keep_partial(&digest).unwrap();
    assert!(s.resume_writer(&digest, 16).unwrap().is_none());
    assert!(!d.path().join("partial").join(&digest[7..]).exists());
}

#[test]
fn docker_equivalent_names_find_the_same_image() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let l = layer(&s, b"layer-bytes");
    let mut cfg = ImageConfig::default();
    cfg.rootfs.diff_ids.push(crate::digest::sha256_of(b"diff"));
    // Stored under the long form (as a pull of docker.io/library/busybox).
    let a = s
        .commit_image(
            &cfg,
            vec![l.clone()],
            &["docker.io/library/busybox:latest".into()],
        )
        .unwrap();
    for n in [
        "busybox",
        "busybox:latest",
        "library/busybox",
        "docker.io/busybox",
    ] {
        assert_eq!(s.resolve(n).unwrap().descriptor.digest, a.digest, "{n}");
    }
    assert!(s.resolve("busybox:1.36").is_err());
    assert!(s.resolve("localhost/busybox").is_err());
    // Tagging with the short form moves the name: one entry, not two.
    cfg.author = Some("other".into());
    let b = s.commit_image(&cfg, vec![l], &["busybox".into()]).unwrap();
    let imgs = s.images().unwrap();
    let named: Vec<_> = imgs.iter().flat_map(|i| i.tags.clone()).collect();
    assert_eq!(named, vec!["busybox:latest".to_string()]);
    assert_eq!(
        s.resolve("docker.io/library/busybox")
            .unwrap()
            .descriptor
            .digest,
        b.digest
    );
    // Removing by any equivalent form removes it.
    s.remove("docker.io/library/busybox:latest").unwrap();
    assert!(s.resolve("busybox").is_err());
}
