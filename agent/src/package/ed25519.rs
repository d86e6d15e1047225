//! ed25519 signature checks on the device, through ring (linked for TLS already: its ed25519 C
//! code is in the binary either way), as strict as ed25519-dalek's `verify_strict`, which the
//! agent used before (the operator's `keygen` and `pack` sign through ring too, keys.rs):
//!
//! - S must be below the group order L: ring refuses a non-reduced S itself.
//! - R and the public key A must decode and satisfy `[S]B = R + [k]A` with R compared by its
//!   bytes: ring does this (a non-canonical R never matches the canonical encoding it computes).
//! - Neither R nor A may be a point of small order (one of the eight points in the curve's
//!   torsion subgroup): a small-order key verifies signatures anyone can forge, a small-order R
//!   lets one signature stand for several messages. ring does not check that; this module does,
//!   by the points' encodings ([`is_small_order`]).

use ring::signature::{UnparsedPublicKey, ED25519};

mod field;

/// Whether `encoded` decodes to a point of the curve (a public key that is none can verify
/// nothing; refused when loaded).
pub fn is_point(encoded: &[u8; 32]) -> bool {
    field::is_point(encoded)
}

/// p = 2^255 - 19, the field's prime, little-endian, as a y coordinate would encode it.
const P: [u8; 32] = le_with(0xed, 0xff, 0x7f);

/// The y coordinates (little-endian, sign bit clear) that the small-order points of
/// edwards25519 (-x^2 + y^2 = 1 + d x^2 y^2) are encoded with, canonical or not:
///
/// - y = 1, x = 0: the identity (order 1); also as y = p + 1, which is below 2^255.
/// - y = p - 1 (= -1), x = 0: order 2.
/// - y = 0, x = +-sqrt(-1): order 4; also as y = p.
/// - y = +-Y8: the four points of order 8 (Y8 below, and p - Y8).
///
/// Only y = 0 and y = 1 have a second, non-canonical encoding (y + p < 2^255 needs y < 19).
/// The same set as libsodium's small-order blocklist (`ge25519_has_small_order`) and the table
/// in Chalkias, Garillot, Nikolaenko, "Taming the many EdDSAs" (2020); RFC 8032 section 5.1
/// defines the encoding (y, little-endian, x's low bit in the top bit of the last byte).
const SMALL_ORDER_Y: [[u8; 32]; 7] = [
    le_with(0x00, 0x00, 0x00), // 0: order 4
    le_with(0x01, 0x00, 0x00), // 1: the identity
    Y8,                        // order 8
    sub_from_p(Y8),            // p - Y8: order 8
    le_with(0xec, 0xff, 0x7f), // p - 1: order 2
    P,                         // p (= 0, not canonical): order 4
    le_with(0xee, 0xff, 0x7f), // p + 1 (= 1, not canonical): the identity
];

/// The y coordinate of two of the order-8 points (the other two have p - Y8), little-endian.
const Y8: [u8; 32] = [
    0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0,
    0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05,
];

/// 32 little-endian bytes: `first`, then `middle` repeated, then `last`.
const fn le_with(first: u8, middle: u8, last: u8) -> [u8; 32] {
    let mut b = [middle; 32];
    b[0] = first;
    b[31] = last;
    b
}

/// p - y for y < p, little-endian.
const fn sub_from_p(y: [u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0u16;
    let mut i = 0;
    while i < 32 {
        let d = (P[i] as u16).wrapping_sub(y[i] as u16).wrapping_sub(borrow);
        out[i] = d as u8;
        borrow = (d >> 15) & 1;
        i += 1;
    }
    out
}

/// Whether `point` (an encoded point: a public key, a signature's R) is one of the small-order
/// points, in any of its encodings (either sign bit, canonical y or not).
pub fn is_small_order(point: &[u8; 32]) -> bool {
    let mut y = *point;
    y[31] &= 0x7f;
    SMALL_ORDER_Y.contains(&y)
}

/// Whether `signature` (R || S) by `public` is valid for `message`, strictly (the module's
/// list). The caller has refused a small-order `public` already (`TrustedKey`); checked again
/// here, one comparison, so no path can skip it.
pub fn verify_strict(public: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    let mut r = [0u8; 32];
    r.copy_from_slice(&signature[..32]);
    if is_small_order(public) || is_small_order(&r) {
        return false;
    }
    UnparsedPublicKey::new(&ED25519, public)
        .verify(message, signature)
        .is_ok()
}

#[cfg(test)]
#[path = "ed25519_tests.rs"]
mod tests;
