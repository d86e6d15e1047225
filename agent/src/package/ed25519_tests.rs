use super::*;
use ed25519_dalek::{Signer, SigningKey as DalekKey, VerifyingKey};

/// The group order L = 2^252 + 27742317777372353535851937790883648493, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Every encoding of a small-order point: the table's y coordinates with either sign bit.
fn small_order_encodings() -> Vec<[u8; 32]> {
    let mut all = Vec::new();
    for y in SMALL_ORDER_Y {
        let mut negative = y;
        negative[31] |= 0x80;
        all.extend([y, negative]);
    }
    all
}

fn dalek_signed(seed: u8, message: &[u8]) -> ([u8; 32], [u8; 64]) {
    let key = DalekKey::from_bytes(&[seed; 32]);
    (key.verifying_key().to_bytes(), key.sign(message).to_bytes())
}

#[test]
fn dalek_signatures_verify_and_nothing_else_does() {
    let message = b"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    for seed in 0..16u8 {
        let (public, sig) = dalek_signed(seed, message);
        assert!(verify_strict(&public, message, &sig), "seed {seed}");
        // Signing through ring gives dalek's bytes (RFC 8032 signatures are deterministic):
        // packages packed before and after the switch are the same.
        let ours = crate::package::SigningKey::from_bytes(&[seed; 32]);
        assert_eq!(ours.public_key(), public);
        assert_eq!(ours.sign(message), sig);
        // A tampered message, another key, a flipped bit of R or of S.
        let mut tampered = *message;
        tampered[10] ^= 1;
        assert!(!verify_strict(&public, &tampered, &sig));
        let (other, _) = dalek_signed(seed.wrapping_add(1), message);
        assert!(!verify_strict(&other, message, &sig));
        for bit in [0, 255, 256, 511] {
            let mut bad = sig;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(!verify_strict(&public, message, &bad), "bit {bit}");
        }
    }
}

#[test]
fn s_at_or_above_the_group_order_is_refused() {
    let message = b"manifest";
    for seed in 0..8u8 {
        let (public, sig) = dalek_signed(seed, message);
        // S + L: the same scalar mod L, so the curve equation still holds; only the check that
        // S is reduced (ring's) refuses it. S < L < 2^253, so S + L fits 32 bytes.
        let mut high = sig;
        let mut carry = 0u16;
        for (i, l) in L.iter().enumerate() {
            let sum = u16::from(high[32 + i]) + u16::from(*l) + carry;
            high[32 + i] = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0);
        assert!(!verify_strict(&public, message, &high), "seed {seed}");
    }
}

#[test]
fn the_table_is_the_small_order_points() {
    let all = small_order_encodings();
    assert_eq!(all.len(), 14);
    for enc in &all {
        assert!(is_small_order(enc), "{enc:02x?}");
        // An independent check of the curve's facts: dalek decodes each (it reduces y mod p)
        // and finds it of small order.
        let key = VerifyingKey::from_bytes(enc).expect("a point");
        assert!(key.is_weak(), "{enc:02x?}");
    }
    // The order-8 points' other y, as the known lists write it.
    assert_eq!(
        crate::store::to_hex(&sub_from_p(Y8)),
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"
    );
    // Keys in the prime-order group are not in the table.
    for seed in 0..64u8 {
        let public = DalekKey::from_bytes(&[seed; 32]).verifying_key().to_bytes();
        assert!(!is_small_order(&public), "seed {seed}");
    }
}

#[test]
fn a_small_order_r_is_refused_though_ring_takes_it() {
    // The identity as key and as R, S = 0: [S]B = R + [k]A holds for every message, and ring
    // alone takes it. A trusted key is never of small order (`TrustedKey`); R is checked here.
    let identity = SMALL_ORDER_Y[1];
    let mut forged = [0u8; 64];
    forged[..32].copy_from_slice(&identity);
    for message in [&b"one manifest"[..], b"another"] {
        assert!(UnparsedPublicKey::new(&ED25519, &identity)
            .verify(message, &forged)
            .is_ok());
        assert!(!verify_strict(&identity, message, &forged));
    }
    // Every small-order R, with a real key and a real S, is refused.
    let (public, sig) = dalek_signed(9, b"m");
    for r in small_order_encodings() {
        let mut bad = sig;
        bad[..32].copy_from_slice(&r);
        assert!(!verify_strict(&public, b"m", &bad), "{r:02x?}");
    }
}
