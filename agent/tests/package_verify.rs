//! Package building and verification: reproducible packs, round trip into the store, and each
//! kind of bad package refused with its fault code and nothing written to the store.

mod common;

use std::fs;

use common::{list_files, test_key, write_app_dir, Parts, Scratch};
use cpevisor_agent::fault::FaultCode;
use cpevisor_agent::package::{
    keygen, load_signing_key, oci, pack_dir, verify_package, LayerKind, PackageCaps, TrustedKey,
};
use cpevisor_agent::store::{Digest, Store};

fn trusted(seed: u8) -> Vec<TrustedKey> {
    vec![TrustedKey::from_bytes(test_key(seed).public_key()).unwrap()]
}

#[test]
fn pack_is_reproducible_and_round_trips_into_the_store() {
    let tmp = Scratch::new("pack-roundtrip");
    let app = tmp.path().join("app");
    write_app_dir(&app, 100_000);
    let keys = keygen(&tmp.path().join("keys")).unwrap();
    let key = load_signing_key(&keys.secret).unwrap();
    let a = pack_dir(&app, &key, &tmp.path().join("a.cpkg")).unwrap();
    let b = pack_dir(&app, &key, &tmp.path().join("b.cpkg")).unwrap();
    assert_eq!(
        fs::read(&a.path).unwrap(),
        fs::read(&b.path).unwrap(),
        "two packs differ"
    );
    assert_eq!(a.signer, keys.key_id);

    // A standard tar reads it as an OCI layout.
    let out = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&a.path)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("oci-layout") && listing.contains("index.json"),
        "{listing}"
    );

    let trusted = vec![TrustedKey::load(&keys.public).unwrap()];
    let pkg = verify_package(&a.path, &trusted, &PackageCaps::default()).unwrap();
    assert_eq!(pkg.manifest_digest, a.manifest_digest);
    assert_eq!(pkg.config.name, "hello");
    assert_eq!(pkg.signer, keys.key_id);
    assert_eq!(pkg.layers.len(), 3);

    let store = Store::open(&tmp.path().join("state")).unwrap();
    let unpacked = pkg.unpack(&store).unwrap();
    let kernel = unpacked.layer_path(&store, LayerKind::Kernel).unwrap();
    assert_eq!(
        fs::read(kernel).unwrap(),
        fs::read(app.join("Image")).unwrap()
    );
    assert_eq!(store.list_blobs().unwrap().len(), 5); // manifest, config, 3 layers
                                                      // Unpacking again shares the blobs.
    pkg.unpack(&store).unwrap();
    assert_eq!(store.list_blobs().unwrap().len(), 5);
    let json = serde_json::to_string(&unpacked).unwrap();
    assert_eq!(
        serde_json::from_str::<cpevisor_agent::package::UnpackedPackage>(&json).unwrap(),
        unpacked
    );
}

/// Verifies `parts` and returns the fault, checking that nothing reached the store.
fn refuse(
    name: &str,
    parts: &Parts,
    trusted: &[TrustedKey],
    caps: &PackageCaps,
) -> (FaultCode, String) {
    let tmp = Scratch::new(name);
    let path = tmp.path().join("p.cpkg");
    parts.write(&path);
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let before = list_files(store.root());
    let err = verify_package(&path, trusted, caps).unwrap_err();
    assert_eq!(list_files(store.root()), before);
    (err.code, err.message)
}

#[test]
fn good_parts_verify() {
    let tmp = Scratch::new("good-parts");
    let path = tmp.path().join("p.cpkg");
    Parts::good(&test_key(1)).write(&path);
    verify_package(&path, &trusted(1), &PackageCaps::default()).unwrap();
}

#[test]
fn corrupted_blob_is_7035() {
    let tmp = Scratch::new("corrupt-blob");
    let path = tmp.path().join("p.cpkg");
    let parts = Parts::good(&test_key(1));
    parts.write(&path);
    // Flip one byte of the kernel blob's data in place.
    let mut bytes = fs::read(&path).unwrap();
    let needle = b"kernel image bytes";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    bytes[at] ^= 0x20;
    fs::write(&path, &bytes).unwrap();
    let err = verify_package(&path, &trusted(1), &PackageCaps::default()).unwrap_err();
    assert_eq!(err.code, FaultCode::CorruptData);
    assert!(err.message.contains("digest mismatch"), "{}", err.message);
}

#[test]
fn truncated_package_is_7035() {
    let tmp = Scratch::new("truncated");
    let path = tmp.path().join("p.cpkg");
    Parts::good(&test_key(1)).write(&path);
    let bytes = fs::read(&path).unwrap();
    for cut in [bytes.len() - 1024, bytes.len() / 2, 700, 100] {
        fs::write(&path, &bytes[..cut]).unwrap();
        let err = verify_package(&path, &trusted(1), &PackageCaps::default()).unwrap_err();
        assert_eq!(
            err.code,
            FaultCode::CorruptData,
            "cut at {cut}: {}",
            err.message
        );
    }
}

#[test]
fn signature_faults_are_7036() {
    let caps = PackageCaps::default();
    let mut unsigned = Parts::good(&test_key(1));
    unsigned.signature = None;
    let (code, msg) = refuse("unsigned", &unsigned, &trusted(1), &caps);
    assert_eq!(code, FaultCode::SignatureFailure);
    assert!(msg.contains("not signed"), "{msg}");

    let (code, msg) = refuse("untrusted", &Parts::good(&test_key(2)), &trusted(1), &caps);
    assert_eq!(code, FaultCode::SignatureFailure);
    assert!(msg.contains("not a trusted key"), "{msg}");

    // Signed by key 2 but claiming to be key 1.
    let mut forged = Parts::good(&test_key(2));
    let id1 = trusted(1)[0].id().to_string();
    forged.signature.as_mut().unwrap().1 = id1;
    let (code, msg) = refuse("forged", &forged, &trusted(1), &caps);
    assert_eq!(code, FaultCode::SignatureFailure);
    assert!(msg.contains("does not match"), "{msg}");

    // A valid signature of a different manifest.
    let mut stale = Parts::good(&test_key(1));
    stale.layers[0].1 = b"another kernel".to_vec();
    let (code, _) = refuse("stale-sig", &stale, &trusted(1), &caps);
    assert_eq!(code, FaultCode::SignatureFailure);

    // S + L (the group order): the same scalar mod L, a signature a lax verifier takes.
    let mut unreduced = Parts::good(&test_key(1));
    let sig = &mut unreduced.signature.as_mut().unwrap().0;
    let mut bytes = cpevisor_agent::store::from_hex(sig).unwrap();
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for (s, l) in bytes[32..].iter_mut().zip(L) {
        let sum = u16::from(*s) + u16::from(l) + carry;
        *s = sum as u8;
        carry = sum >> 8;
    }
    *sig = cpevisor_agent::store::to_hex(&bytes);
    let (code, msg) = refuse("unreduced-s", &unreduced, &trusted(1), &caps);
    assert_eq!(code, FaultCode::SignatureFailure);
    assert!(msg.contains("does not match"), "{msg}");

    let mut garbage = Parts::good(&test_key(1));
    garbage.signature.as_mut().unwrap().0 = "not a signature".into();
    let (code, _) = refuse("garbage-sig", &garbage, &trusted(1), &caps);
    assert_eq!(code, FaultCode::SignatureFailure);
}

#[test]
fn malformed_config_is_7004_naming_the_field() {
    let caps = PackageCaps::default();
    let key = test_key(1);
    let mut p = Parts::good(&key);
    p.config = b"{\"name\": \"hello\", ".to_vec();
    p.sign_with(&key);
    let (code, _) = refuse("config-syntax", &p, &trusted(1), &caps);
    assert_eq!(code, FaultCode::InvalidArguments);

    let mut cfg = common::app_config_json();
    cfg["vcpus"] = 0.into();
    p.config = serde_json::to_vec(&cfg).unwrap();
    p.sign_with(&key);
    let (code, msg) = refuse("config-field", &p, &trusted(1), &caps);
    assert_eq!(code, FaultCode::InvalidArguments);
    assert!(msg.contains("`vcpus`"), "{msg}");
}

#[test]
fn structural_faults_are_7035() {
    let caps = PackageCaps::default();
    let key = test_key(1);

    let mut unknown = Parts::good(&key);
    unknown
        .layers
        .push(("application/x-surprise".into(), b"?".to_vec()));
    unknown.sign_with(&key);
    let (code, msg) = refuse("unknown-media", &unknown, &trusted(1), &caps);
    assert_eq!(code, FaultCode::CorruptData);
    assert!(msg.contains("application/x-surprise"), "{msg}");

    let mut wrong_size = Parts::good(&key);
    wrong_size.layer_size_override = Some((0, 5));
    wrong_size.sign_with(&key);
    let (code, msg) = refuse("wrong-size", &wrong_size, &trusted(1), &caps);
    assert_eq!(code, FaultCode::CorruptData);
    assert!(msg.contains("descriptor says 5"), "{msg}");

    let mut extra = Parts::good(&key);
    extra
        .extra_files
        .push(("blobs/sha256/stowaway".into(), b"x".to_vec()));
    let (code, msg) = refuse("extra-file", &extra, &trusted(1), &caps);
    assert_eq!(code, FaultCode::CorruptData);
    assert!(msg.contains("stowaway"), "{msg}");

    let mut no_kernel = Parts::good(&key);
    no_kernel.layers.remove(0);
    no_kernel.sign_with(&key);
    let (code, msg) = refuse("no-kernel", &no_kernel, &trusted(1), &caps);
    assert_eq!(code, FaultCode::CorruptData);
    assert!(msg.contains("kernel"), "{msg}");

    let mut wrong_config_media = Parts::good(&key);
    wrong_config_media.config_media = "application/vnd.oci.image.config.v1+json".into();
    wrong_config_media.sign_with(&key);
    let (code, _) = refuse("config-media", &wrong_config_media, &trusted(1), &caps);
    assert_eq!(code, FaultCode::CorruptData);

    let mut huge_config = Parts::good(&key);
    huge_config.config = vec![b' '; 70 * 1024];
    huge_config.sign_with(&key);
    let (code, msg) = refuse("huge-config", &huge_config, &trusted(1), &caps);
    assert_eq!(code, FaultCode::CorruptData);
    assert!(msg.contains("limit"), "{msg}");
}

#[test]
fn package_over_the_cap_is_7005() {
    let caps = PackageCaps {
        max_package_bytes: 2048,
        ..PackageCaps::default()
    };
    let (code, msg) = refuse("over-cap", &Parts::good(&test_key(1)), &trusted(1), &caps);
    assert_eq!(code, FaultCode::ResourcesExceeded);
    assert!(msg.contains("2048 byte cap"), "{msg}");
}

#[test]
fn pack_refuses_bad_app_dirs() {
    let tmp = Scratch::new("pack-bad");
    let app = tmp.path().join("app");
    write_app_dir(&app, 10);
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(app.join("app.json")).unwrap()).unwrap();
    cfg["kernel"] = "../outside".into();
    fs::write(app.join("app.json"), cfg.to_string()).unwrap();
    let err = pack_dir(&app, &test_key(1), &tmp.path().join("x.cpkg")).unwrap_err();
    assert_eq!(err.code, FaultCode::InvalidArguments);
    cfg["kernel"] = "missing-file".into();
    fs::write(app.join("app.json"), cfg.to_string()).unwrap();
    let err = pack_dir(&app, &test_key(1), &tmp.path().join("x.cpkg")).unwrap_err();
    assert!(err.message.contains("missing-file"), "{}", err.message);
    assert!(!tmp.path().join("x.cpkg").exists());
    assert_eq!(oci::blob_name(&Digest::of(b"")).len(), 13 + 64);
}

/// A root file system image is a layer of its own (`rootfs_image` in app.json), beside an
/// initrd or not: both together are accepted (a guest whose initramfs mounts the image as its
/// root, as a stock kernel with erofs as a module would need), and the installed version points
/// at the one blob in the store, which every app with the same image shares.
#[test]
fn a_root_image_layer_packs_verifies_and_unpacks_beside_an_initrd() {
    let tmp = Scratch::new("pack-root-image");
    let key = test_key(1);
    let app = tmp.path().join("app");
    write_app_dir(&app, 4096);
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(app.join("app.json")).unwrap()).unwrap();
    cfg["rootfs_image"] = "root.erofs".into();
    fs::write(app.join("app.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    fs::write(app.join("root.erofs"), vec![0xe2u8; 8192]).unwrap();
    let packed = pack_dir(&app, &key, &tmp.path().join("a.cpkg")).unwrap();
    let pkg = verify_package(&packed.path, &trusted(1), &PackageCaps::default()).unwrap();
    assert_eq!(pkg.layers.len(), 4, "kernel, initrd, rootfs, root image");
    assert_eq!(
        LayerKind::from_media_type(oci::MEDIA_ROOTFS_IMAGE),
        Some(LayerKind::RootfsImage)
    );
    assert_eq!(LayerKind::RootfsImage.key(), "rootfs_image");

    let store = Store::open(&tmp.path().join("state")).unwrap();
    let unpacked = pkg.unpack(&store).unwrap();
    let image = unpacked.layer_path(&store, LayerKind::RootfsImage).unwrap();
    assert_eq!(fs::read(&image).unwrap(), vec![0xe2u8; 8192]);
    assert!(unpacked.layer_path(&store, LayerKind::Initrd).is_some());
    // The blob is the content-addressed file itself: the same bytes in another package land
    // on the same path.
    assert_eq!(image, store.blob_path(&Digest::of(&[0xe2u8; 8192])));
}

/// A jail app's root may be an erofs image (`rootfs_erofs`) instead of the tar layer: alone it
/// satisfies the jail backend and unpacks to its blob only; beside a tar layer it is refused
/// (7035), since the jail would use one and leave the other taking flash for nothing.
#[test]
fn a_jail_root_is_a_tar_or_an_erofs_image_not_both() {
    let tmp = Scratch::new("pack-jail-erofs");
    let key = test_key(1);
    let app = tmp.path().join("app");
    write_app_dir(&app, 4096);
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(app.join("app.json")).unwrap()).unwrap();
    cfg["rootfs_erofs"] = "root.erofs".into();
    fs::write(app.join("app.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    // Not a file system, but with erofs' magic: pack takes it as an image made already.
    let mut fake = vec![0xe2u8; 8192];
    fake[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
    fs::write(app.join("root.erofs"), &fake).unwrap();
    let both = pack_dir(&app, &key, &tmp.path().join("both.cpkg")).unwrap();
    let err = verify_package(&both.path, &trusted(1), &PackageCaps::default()).unwrap_err();
    assert_eq!(err.code, FaultCode::CorruptData);
    assert!(
        err.message.contains("both a rootfs tar layer and"),
        "{}",
        err.message
    );

    cfg.as_object_mut().unwrap().remove("rootfs");
    cfg["backends"] = serde_json::json!(["jail"]);
    fs::write(app.join("app.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let packed = pack_dir(&app, &key, &tmp.path().join("a.cpkg")).unwrap();
    let pkg = verify_package(&packed.path, &trusted(1), &PackageCaps::default()).unwrap();
    assert_eq!(
        LayerKind::from_media_type(oci::MEDIA_ROOTFS_EROFS),
        Some(LayerKind::RootfsErofs)
    );
    assert!(pkg.layers.contains_key(&LayerKind::RootfsErofs));
    assert!(!pkg.layers.contains_key(&LayerKind::Rootfs));
    let store = Store::open(&tmp.path().join("state")).unwrap();
    let unpacked = pkg.unpack(&store).unwrap();
    let image = unpacked.layer_path(&store, LayerKind::RootfsErofs).unwrap();
    assert_eq!(image, store.blob_path(&Digest::of(&fake)));

    // A blob that is no erofs image is refused at install, not at every start.
    let mut junk = Parts::good(&key);
    junk.layers[1] = (oci::MEDIA_ROOTFS_EROFS.to_string(), vec![0x55u8; 4096]);
    junk.sign_with(&key);
    let (code, msg) = refuse("erofs-junk", &junk, &trusted(1), &PackageCaps::default());
    assert_eq!(code, FaultCode::CorruptData);
    assert!(msg.contains("not an erofs image"), "{msg}");
    junk.layers[1].1[1024..1028].copy_from_slice(&oci::EROFS_MAGIC);
    junk.sign_with(&key);
    let path = tmp.path().join("magic.cpkg");
    junk.write(&path);
    verify_package(&path, &trusted(1), &PackageCaps::default()).expect("magic in place");

    // Without either, a jail package is refused.
    cfg.as_object_mut().unwrap().remove("rootfs_erofs");
    fs::write(app.join("app.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let none = pack_dir(&app, &key, &tmp.path().join("none.cpkg")).unwrap();
    let err = verify_package(&none.path, &trusted(1), &PackageCaps::default()).unwrap_err();
    assert!(err.message.contains("no rootfs layer"), "{}", err.message);
}

/// `pack` makes the erofs root image itself from a directory or a tar (`rootfs_erofs` naming
/// one), reproducibly, giving a tar's tree the jail's mount points; a directory without them
/// is refused, naming them. Needs `mkfs.erofs` (erofs-utils, `make setup`).
#[test]
fn pack_makes_the_erofs_root_from_a_directory_or_a_tar() {
    if std::process::Command::new("mkfs.erofs")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("skipped: needs mkfs.erofs");
        return;
    }
    let tmp = Scratch::new("pack-erofs-src");
    let key = test_key(1);
    let app = tmp.path().join("app");
    write_app_dir(&app, 16);
    let tree = app.join("tree");
    fs::create_dir_all(tree.join("bin")).unwrap();
    fs::write(tree.join("bin/app"), b"#!/bin/sh\necho hi\n").unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(app.join("app.json")).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("rootfs");
    cfg["rootfs_erofs"] = "tree".into();
    fs::write(app.join("app.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let err = pack_dir(&app, &key, &tmp.path().join("x.cpkg")).unwrap_err();
    assert_eq!(err.code, FaultCode::InvalidArguments);
    assert!(
        err.message.contains("proc, dev, tmp, data"),
        "{}",
        err.message
    );
    assert!(!tmp.path().join("x.cpkg").exists());

    let image_of = |pkg: &std::path::Path| -> Vec<u8> {
        let v = verify_package(pkg, &trusted(1), &PackageCaps::default()).unwrap();
        let store = Store::open(&tmp.path().join("state")).unwrap();
        let u = v.unpack(&store).unwrap();
        fs::read(u.layer_path(&store, LayerKind::RootfsErofs).unwrap()).unwrap()
    };
    // From a tar: the mount points are added.
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(&tree)
        .arg("-cf")
        .arg(app.join("tree.tar"))
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    cfg["rootfs_erofs"] = "tree.tar".into();
    fs::write(app.join("app.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let from_tar = pack_dir(&app, &key, &tmp.path().join("t.cpkg")).unwrap();
    let image = image_of(&from_tar.path);
    assert_eq!(
        image[1024..1028],
        0xE0F5_E1E2u32.to_le_bytes(),
        "erofs magic"
    );
    // From a directory that has them: the same tree, the same image bytes.
    for p in ["proc", "dev", "tmp", "data"] {
        fs::create_dir(tree.join(p)).unwrap();
    }
    cfg["rootfs_erofs"] = "tree".into();
    fs::write(app.join("app.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let a = pack_dir(&app, &key, &tmp.path().join("a.cpkg")).unwrap();
    let b = pack_dir(&app, &key, &tmp.path().join("b.cpkg")).unwrap();
    assert_eq!(a.manifest_digest, b.manifest_digest, "reproducible");
    assert_eq!(image_of(&a.path)[1024..1028], image[1024..1028]);
    // Nothing of the build is left beside the packages.
    let mut left: Vec<String> = list_files(tmp.path())
        .into_iter()
        .filter(|f| f.contains(".rootfs") || f.ends_with(".tmp"))
        .collect();
    left.sort();
    assert!(left.is_empty(), "{left:?}");
}
