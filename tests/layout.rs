//! Layout ops (permute, slice, concat, broadcast, reshape) and their gradients.
mod common;
use atomgrad::ops::layout::{self, cpu};
use atomgrad::rng::Rng;
use atomgrad::Var;
use common::*;

#[test]
fn permute_and_transpose_match_reference() {
    let dev = device();
    // odd dims (one element per invocation) and an innermost dim of 8 (runs of 4 per invocation,
    // as the attention heads' permutes get)
    for dims in [[2, 3, 5, 7], [2, 3, 5, 8]] {
        let x = Rng::new(9).vec(dims.iter().product(), -1.0, 1.0);
        let t = upload(&dev, &x, &dims);
        for perm in [[0, 1, 2, 3], [3, 2, 1, 0], [0, 2, 1, 3], [1, 3, 0, 2]] {
            let y = layout::permute(&t, &perm).unwrap();
            let (r, shape) = cpu::permute(&x, &dims, &perm);
            assert_eq!(y.shape(), shape.as_slice());
            assert_close(&format!("permute {dims:?} {perm:?}"), &y.to_vec().unwrap(), &r, 0.0, 0.0);
        }
        assert!(layout::permute(&t, &[0, 0, 1, 2]).is_err());
    }
}

#[test]
fn slice_concat_broadcast_match_reference() {
    let dev = device();
    let x = Rng::new(10).vec(4 * 6 * 3, -1.0, 1.0);
    let t = upload(&dev, &x, &[4, 6, 3]);
    let s = layout::slice(&t, 1, 2, 5).unwrap();
    assert_eq!(s.shape(), &[4, 3, 3]);
    assert_close("slice", &s.to_vec().unwrap(), &cpu::slice(&x, &[4, 6, 3], 1, 2, 5), 0.0, 0.0);
    let a = layout::slice(&t, 1, 0, 2).unwrap();
    let b = layout::slice(&t, 1, 2, 6).unwrap();
    let c = layout::concat(&[&a, &b], 1).unwrap();
    assert_close("concat", &c.to_vec().unwrap(), &x, 0.0, 0.0);
    let row = upload(&dev, &[1.0, 2.0, 3.0], &[3]);
    let br = layout::broadcast_to(&row, &[2, 3]).unwrap().to_vec().unwrap();
    assert_eq!(br, vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    assert!(layout::slice(&t, 1, 5, 7).is_err());
    assert!(layout::concat(&[&a, &row], 1).is_err());
    // an innermost dim of 4: runs of 4 per invocation, sliced and concatenated along dim 1 and 2
    let x = Rng::new(12).vec(3 * 5 * 8, -1.0, 1.0);
    let t = upload(&dev, &x, &[3, 5, 8]);
    let s = layout::slice(&t, 2, 4, 8).unwrap();
    assert_close("slice of 4", &s.to_vec().unwrap(), &cpu::slice(&x, &[3, 5, 8], 2, 4, 8), 0.0, 0.0);
    let (a, b) = (layout::slice(&t, 1, 0, 3).unwrap(), layout::slice(&t, 1, 3, 5).unwrap());
    assert_close("concat of runs", &layout::concat(&[&a, &b], 1).unwrap().to_vec().unwrap(), &x, 0.0, 0.0);
    let (a, b) = (layout::slice(&t, 2, 0, 4).unwrap(), layout::slice(&t, 2, 4, 8).unwrap());
    assert_close("concat along runs", &layout::concat(&[&a, &b], 2).unwrap().to_vec().unwrap(), &x, 0.0, 0.0);
    // those copies run as whole vec4s (offsets and strides multiples of 4); runs of 4 that are not
    // aligned so (an offset of 1, a row stride of 6) keep the element copies
    let x = Rng::new(13).vec(3 * 5 * 6, -1.0, 1.0);
    let t = upload(&dev, &x, &[3, 5, 6]);
    for (lo, hi) in [(1, 5), (0, 4), (2, 6)] {
        let s = layout::slice(&t, 2, lo, hi).unwrap();
        let want = cpu::slice(&x, &[3, 5, 6], 2, lo, hi);
        assert_close(&format!("unaligned slice {lo}..{hi}"), &s.to_vec().unwrap(), &want, 0.0, 0.0);
    }
}

#[test]
fn layout_gradients_match_finite_differences() {
    let mut rng = Rng::new(11);
    let x = rng.vec(24, -1.0, 1.0);
    grad_check(
        "permute",
        &[(x.clone(), vec![2, 3, 4])],
        &[true],
        |v| v[0].permute(&[2, 0, 1]),
        |i| cpu::permute(&i[0], &[2, 3, 4], &[2, 0, 1]).0,
        1e-3,
    );
    grad_check(
        "slice",
        &[(x.clone(), vec![2, 3, 4])],
        &[true],
        |v| v[0].slice(2, 1, 3),
        |i| cpu::slice(&i[0], &[2, 3, 4], 2, 1, 3),
        1e-3,
    );
    grad_check(
        "reshape+transpose",
        &[(x.clone(), vec![2, 3, 4])],
        &[true],
        |v| v[0].reshape(&[6, 4])?.transpose(0, 1),
        |i| cpu::permute(&i[0], &[6, 4], &[1, 0]).0,
        1e-3,
    );
    let y = rng.vec(8, -1.0, 1.0);
    grad_check(
        "concat",
        &[(x.clone(), vec![2, 3, 4]), (y, vec![2, 1, 4])],
        &[true, true],
        |v| Var::concat(&[&v[0], &v[1]], 1),
        |i| {
            let mut out = Vec::new();
            for o in 0..2 {
                out.extend_from_slice(&i[0][o * 12..(o + 1) * 12]);
                out.extend_from_slice(&i[1][o * 4..(o + 1) * 4]);
            }
            out
        },
        1e-3,
    );
    // Attention's head split of a fused projection [N, L, 3 d] (d = 4, 2 heads): against slice,
    // reshape and permute of the reference, for every part.
    let qkv = rng.vec(2 * 3 * 12, -1.0, 1.0);
    for part in 0..3 {
        grad_check(
            &format!("split_heads part {part}"),
            &[(qkv.clone(), vec![2, 3, 12])],
            &[true],
            move |v| v[0].split_heads(part, 3, 2),
            move |i| {
                cpu::permute(&cpu::slice(&i[0], &[2, 3, 12], 2, 4 * part, 4 * part + 4), &[2, 3, 2, 2], &[0, 2, 1, 3]).0
            },
            1e-3,
        );
    }
    grad_check(
        "broadcast_to",
        &[(rng.vec(3, -1.0, 1.0), vec![3, 1])],
        &[true],
        |v| v[0].broadcast_to(&[2, 3, 4]),
        |i| (0..24).map(|k| i[0][(k / 4) % 3]).collect(),
        1e-3,
    );
}

/// pad_axis against a CPU loop: the one-pass vec4-row path (last axis, whole vec4s, any left
/// offset) and the general clear-and-copy path give zeros around an exact copy.
#[test]
fn pad_axis_matches_reference_on_every_path() {
    let dev = device();
    let cases: &[(&[usize], &[usize], usize, usize)] = &[
        (&[3, 5], &[3, 12], 1, 2),
        (&[2, 3, 7], &[2, 3, 8], 2, 0),
        (&[1, 1], &[1, 4], 1, 3),
        (&[5], &[16], 0, 9),
        (&[4, 6], &[4, 11], 1, 5),
        (&[2, 3], &[5, 3], 0, 1),
        (&[2, 3, 2], &[2, 7, 2], 1, 4),
    ];
    for (i, &(from, to, axis, start)) in cases.iter().enumerate() {
        let x = Rng::new(i as u64).vec(from.iter().product(), -1.0, 1.0);
        let y = layout::pad_axis(&upload(&dev, &x, from), to, axis, start).unwrap();
        assert_eq!(y.shape(), to);
        let inner: usize = to[axis + 1..].iter().product();
        let mut want = vec![0.0; to.iter().product()];
        for (k, &v) in x.iter().enumerate() {
            let (outer, rest) = (k / (from[axis] * inner), k % (from[axis] * inner));
            let (a, j) = (rest / inner, rest % inner);
            want[(outer * to[axis] + start + a) * inner + j] = v;
        }
        assert_close(&format!("pad_axis case {i} {from:?} -> {to:?}"), &y.to_vec().unwrap(), &want, 0.0, 0.0);
    }
}

#[test]
fn pad_last_to_zero_pads_rows_to_a_multiple() {
    let dev = device();
    let x: Vec<f64> = (1..=6).map(f64::from).collect();
    let y = layout::pad_last_to(&upload(&dev, &x, &[2, 3]), 4).unwrap();
    assert_eq!(y.shape(), &[2, 4]);
    assert_close("pad_last_to", &y.to_vec().unwrap(), &[1.0, 2.0, 3.0, 0.0, 4.0, 5.0, 6.0, 0.0], 0.0, 0.0);
    // already a multiple: the same tensor, not a copy
    let z = upload(&dev, &[1.0; 8], &[2, 4]);
    assert!(layout::pad_last_to(&z, 4).unwrap().same_storage(&z));
}
