//! Just enough arithmetic modulo p = 2^255 - 19 to tell whether 32 bytes encode a point of
//! edwards25519 (RFC 8032 section 5.1.3): ring decodes points only inside its signature check,
//! and a trusted key that is no point is better refused when it is loaded, naming why.
//! Elements are five 51-bit limbs, little-endian (the usual radix for this prime); nothing here
//! is secret, so nothing needs to run in constant time.

type Fe = [u64; 5];

const MASK: u64 = (1 << 51) - 1;

/// d = -121665 / 121666 mod p, the curve's constant (RFC 8032 section 5.1), little-endian.
const D: [u8; 32] = [
    0xa3, 0x78, 0x59, 0x13, 0xca, 0x4d, 0xeb, 0x75, 0xab, 0xd8, 0x41, 0x41, 0x4d, 0x0a, 0x70, 0x00,
    0x98, 0xe8, 0x79, 0x77, 0x79, 0x40, 0xc7, 0x8c, 0x73, 0xfe, 0x6f, 0x2b, 0xee, 0x6c, 0x03, 0x52,
];

/// The low 255 bits of `b`, little-endian (the top bit is x's sign in a point's encoding).
pub(super) fn from_bytes(b: &[u8; 32]) -> Fe {
    let load = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[i..i + 8]);
        u64::from_le_bytes(w)
    };
    [
        load(0) & MASK,
        (load(6) >> 3) & MASK,
        (load(12) >> 6) & MASK,
        (load(19) >> 1) & MASK,
        (load(24) >> 12) & MASK,
    ]
}

pub(super) fn small(n: u64) -> Fe {
    [n, 0, 0, 0, 0]
}

/// Limbs back below 2^51 (plus a little in limb 0), the carry out of the top wrapping as 19.
fn carry(c: [u128; 5]) -> Fe {
    let mut out = [0u64; 5];
    let mut k = 0u128;
    for i in 0..5 {
        let t = c[i] + k;
        out[i] = (t as u64) & MASK;
        k = t >> 51;
    }
    let t = u128::from(out[0]) + k * 19;
    out[0] = (t as u64) & MASK;
    out[1] += (t >> 51) as u64;
    out
}

/// a * b. A loop, not the 25 products written out: on 32-bit CPUs each u128 product is a
/// run of instructions, and this runs a few hundred times per key loaded.
pub(super) fn mul(a: &Fe, b: &Fe) -> Fe {
    let mut c = [0u128; 5];
    for (i, x) in a.iter().enumerate() {
        for (j, y) in b.iter().enumerate() {
            let p = u128::from(*x) * u128::from(*y);
            // 2^255 = 19 mod p: what reaches limb 5 and up wraps to the bottom, times 19.
            match i + j {
                k if k < 5 => c[k] += p,
                k => c[k - 5] += p * 19,
            }
        }
    }
    carry(c)
}

pub(super) fn add(a: &Fe, b: &Fe) -> Fe {
    carry(std::array::from_fn(|i| u128::from(a[i]) + u128::from(b[i])))
}

/// a - b, as a + 2p - b (limb-wise nonnegative for reduced limbs).
pub(super) fn sub(a: &Fe, b: &Fe) -> Fe {
    const TWO_P: Fe = [2 * ((1 << 51) - 19), 2 * MASK, 2 * MASK, 2 * MASK, 2 * MASK];
    carry(std::array::from_fn(|i| {
        u128::from(a[i]) + u128::from(TWO_P[i]) - u128::from(b[i])
    }))
}

/// The unique representative below p.
pub(super) fn canonical(a: &Fe) -> Fe {
    let mut h = carry(a.map(u128::from));
    // h < 2^255 now; h >= p exactly when h + 19 carries out of bit 255.
    let mut q = (h[0] + 19) >> 51;
    for limb in &h[1..] {
        q = (limb + q) >> 51;
    }
    h[0] += 19 * q;
    for i in 0..4 {
        h[i + 1] += h[i] >> 51;
        h[i] &= MASK;
    }
    h[4] &= MASK;
    h
}

/// a^((p-1)/2): 1 for a nonzero square, 0 for 0, p-1 otherwise (Euler's criterion).
fn legendre(a: &Fe) -> Fe {
    // (p-1)/2 = 2^254 - 10: bits 253..4 set, then 0110.
    let mut r = small(1);
    for bit in (0..254).rev() {
        r = mul(&r, &r);
        let set = bit >= 4 || (0b0110 >> bit) & 1 == 1;
        if set {
            r = mul(&r, a);
        }
    }
    canonical(&r)
}

/// Whether `encoded` is a point's encoding: x^2 = (y^2 - 1) / (d y^2 + 1) has a solution. As
/// ed25519-dalek decodes, y is taken mod p (non-canonical y are small-order points, refused
/// by their table) and the sign bit is not judged.
pub(super) fn is_point(encoded: &[u8; 32]) -> bool {
    let y = from_bytes(encoded);
    let yy = mul(&y, &y);
    let u = sub(&yy, &small(1));
    let v = add(&mul(&from_bytes(&D), &yy), &small(1));
    // u/v is a square iff u*v is (v is never 0: d is not a square).
    legendre(&mul(&u, &v)) != canonical(&sub(&small(0), &small(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn d_is_the_curves_constant() {
        // d * 121666 + 121665 = 0 mod p.
        let zero = add(&mul(&from_bytes(&D), &small(121_666)), &small(121_665));
        assert_eq!(canonical(&zero), small(0));
        // p itself is 0, p + 1 is 1.
        let mut p = [0xff; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        assert_eq!(canonical(&from_bytes(&p)), small(0));
        p[0] = 0xee;
        assert_eq!(canonical(&from_bytes(&p)), small(1));
    }

    /// Agrees with ed25519-dalek's decoding on arbitrary bytes (about half are points).
    #[test]
    fn points_are_what_dalek_decodes() {
        let mut points = 0;
        for i in 0u32..600 {
            let digest = crate::store::Digest::of(&i.to_le_bytes()).to_string();
            let bytes: [u8; 32] = crate::store::from_hex(&digest[7..])
                .unwrap()
                .try_into()
                .unwrap();
            let dalek = ed25519_dalek::VerifyingKey::from_bytes(&bytes).is_ok();
            assert_eq!(is_point(&bytes), dalek, "{bytes:02x?}");
            points += usize::from(dalek);
        }
        assert!((200..400).contains(&points), "{points}");
    }
}
