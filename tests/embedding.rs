//! Embedding lookup against the f64 reference: repeated ids, unused rows, odd V and D, the
//! inverse index, gradient checks w.r.t. the table, and bad ids.
mod common;
use atomgrad::ops::embedding::{self, cpu, Indices};
use atomgrad::rng::Rng;
use atomgrad::{Tape, Tensor};
use common::*;

#[test]
fn forward_and_backward_match_reference() {
    let dev = device();
    let mut rng = Rng::new(41);
    let cases: [(usize, usize, &[usize]); 5] =
        [(1, 1, &[1]), (7, 3, &[2, 5]), (257, 65, &[3, 100]), (33, 1, &[1000]), (5, 300, &[4, 3, 2])];
    for (v, d, shape) in cases {
        let n: usize = shape.iter().product();
        // ids drawn from the first half of the vocabulary (when there is one): repeats and unused rows
        let ids: Vec<u32> = (0..n).map(|_| rng.below(v.div_ceil(2)) as u32).collect();
        let table = rng.vec(v * d, -1.0, 1.0);
        let idx = Indices::new(&dev, &ids, shape, v).unwrap();
        let tt = upload(&dev, &table, &[v, d]);
        let y = embedding::embedding(&tt, &idx).unwrap();
        let mut out = shape.to_vec();
        out.push(d);
        assert_eq!(y.shape(), out.as_slice());
        let what = format!("V {v} D {d} ids {shape:?}");
        assert_close(&format!("embedding {what}"), &y.to_vec().unwrap(), &cpu::embedding(&table, d, &ids), 0.0, 0.0);
        let gy = rng.vec(n * d, -1.0, 1.0);
        let g = embedding::embedding_backward(&upload(&dev, &gy, &out), &idx, d).unwrap().to_vec().unwrap();
        let r = cpu::embedding_backward(&gy, d, &ids, v);
        assert_close(&format!("embedding_backward {what}"), &g, &r, 1e-5, 1e-5);
        if v > 1 {
            // the upper half of the vocabulary is never read: exactly 0
            assert!(g[v.div_ceil(2) * d..].iter().all(|&x| x == 0.0), "unused rows {what}");
        }
    }
}

#[test]
fn inverse_index_lists_positions_in_order() {
    let dev = device();
    let ids = [2u32, 0, 2, 4, 2, 0];
    let idx = Indices::new(&dev, &ids, &[2, 3], 5).unwrap();
    assert_eq!(idx.vocab(), 5);
    assert_eq!(idx.len(), 6);
    assert_eq!(idx.ids.shape(), &[2, 3]);
    assert_eq!(idx.ids.to_vec_u32().unwrap(), ids);
    assert_eq!(idx.positions.to_vec_u32().unwrap(), [1, 5, 0, 2, 4, 3]);
    // one chunk per id read (ids 0, 2, 4), none for the unread ids 1 and 3
    assert_eq!(idx.chunks.to_vec_u32().unwrap(), [0, 2, 5, 6, 6, 6]); // padded to 6 / 32 + min(6, 5) chunks
    assert_eq!(idx.row_chunks.to_vec_u32().unwrap(), [0, 1, 1, 2, 2, 3]);
    // an id read 70 times: chunks of 32, 32 and 6 positions
    let ids: Vec<u32> = (0..72).map(|p| if p == 3 || p == 40 { 0 } else { 1 }).collect();
    let idx = Indices::new(&dev, &ids, &[72], 3).unwrap();
    assert_eq!(embedding::CHUNK, 32);
    assert_eq!(idx.chunks.to_vec_u32().unwrap(), [0, 2, 34, 66, 72, 72]); // 72 / 32 + min(72, 3)
    assert_eq!(idx.row_chunks.to_vec_u32().unwrap(), [0, 1, 4, 4]);
}

#[test]
fn table_gradient_matches_finite_differences() {
    let mut rng = Rng::new(42);
    for (v, d, shape) in [(5usize, 3usize, vec![2usize, 4]), (1, 1, vec![3]), (9, 7, vec![5])] {
        let n: usize = shape.iter().product();
        let ids: Vec<u32> = (0..n).map(|_| rng.below(v) as u32).collect();
        let table = rng.vec(v * d, -1.0, 1.0);
        let (ids2, s2) = (ids.clone(), shape.clone());
        grad_check(
            &format!("embedding V {v} D {d} ids {shape:?}"),
            &[(table, vec![v, d])],
            &[true],
            move |t| t[0].embedding(&Indices::new(t[0].value().device(), &ids2, &s2, v)?),
            move |i| cpu::embedding(&i[0], d, &ids),
            1e-4,
        );
    }
}

#[test]
fn gradient_is_deterministic_with_many_repeats() {
    let dev = device();
    let mut rng = Rng::new(43);
    let (v, d, n) = (3, 5, 4000);
    let ids: Vec<u32> = (0..n).map(|_| rng.below(v) as u32).collect();
    let idx = Indices::new(&dev, &ids, &[n], v).unwrap();
    let gy = upload(&dev, &rng.vec(n * d, -1.0, 1.0), &[n, d]);
    let a = embedding::embedding_backward(&gy, &idx, d).unwrap().to_vec().unwrap();
    let b = embedding::embedding_backward(&gy, &idx, d).unwrap().to_vec().unwrap();
    assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
}

#[test]
fn bad_ids_and_shapes_are_errors() {
    let dev = device();
    let e = Indices::new(&dev, &[0, 3, 9, 1], &[2, 2], 4).unwrap_err().to_string();
    assert!(e.contains("embedding") && e.contains("id 9") && e.contains("[1, 0]") && e.contains('4'), "{e}");
    let e = Indices::new(&dev, &[0, 1, 2], &[2, 2], 4).unwrap_err().to_string();
    assert!(e.contains("embedding") && e.contains("[2, 2]"), "{e}");
    // a table whose V differs from the vocabulary the ids were checked against
    let idx = Indices::new(&dev, &[0, 1], &[2], 4).unwrap();
    let tape = Tape::new();
    let t = tape.leaf(Tensor::zeros(&dev, &[3, 2]).unwrap());
    let e = t.embedding(&idx).unwrap_err().to_string();
    assert!(e.contains("embedding") && e.contains("[3, 2]") && e.contains("[2]"), "{e}");
    let t = tape.leaf(Tensor::zeros(&dev, &[8]).unwrap());
    assert!(t.embedding(&idx).unwrap_err().to_string().contains("[8]"));
}

/// Batches of the same shape whose ids spread differently (one frequent id, then many distinct
/// ones) give the backward pass the same buffers: once warm, a step creates no bind group.
#[test]
fn batches_with_other_id_spreads_reuse_every_bind_group() {
    let dev = own_device(); // counts this device's bind groups only
    let mut rng = Rng::new(44);
    let (v, d, n) = (300, 8, 256);
    let table = upload(&dev, &rng.vec(v * d, -1.0, 1.0), &[v, d]);
    let gy = upload(&dev, &rng.vec(n * d, -1.0, 1.0), &[n, d]);
    for step in 0..8 {
        let ids: Vec<u32> = (0..n).map(|p| if step % 2 == 0 && p % 4 != 0 { 0 } else { rng.below(v) as u32 }).collect();
        let before = dev.stats();
        let idx = Indices::new(&dev, &ids, &[n], v).unwrap();
        drop(embedding::embedding(&table, &idx).unwrap());
        drop(embedding::embedding_backward(&gy, &idx, d).unwrap());
        drop(idx);
        dev.flush().unwrap();
        if step >= 2 {
            assert_eq!(dev.stats().bind_groups_created, before.bind_groups_created, "step {step} created bind groups");
        }
    }
}
