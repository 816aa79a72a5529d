//! The benchmark ceiling probe computes what its reference says (a probe that computes nothing
//! could be optimised away and would report a fake ceiling).
mod common;
use atomgrad::ops::peak;
use common::*;

#[test]
fn fma_peak_matches_reference() {
    let dev = device();
    for n in [1, 300] {
        let y = peak::fma_peak(&dev, n, 37, 0.9, 0.01).unwrap().to_vec().unwrap();
        assert_close("fma_peak", &y, &peak::cpu::fma_peak(n, 37, 0.9, 0.01), 1e-4, 1e-4);
    }
}

#[test]
fn copy_vec4_copies_and_refuses_odd_sizes() {
    let dev = device();
    let v: Vec<f64> = (0..1028).map(|i| i as f64 * 0.25 - 7.0).collect();
    let (src, dst) = (upload(&dev, &v, &[1028]), upload(&dev, &vec![0.0; 1028], &[1028]));
    peak::copy_vec4(&src, &dst).unwrap();
    assert_close("copy_vec4", &dst.to_vec().unwrap(), &v, 0.0, 0.0);
    let odd = upload(&dev, &[1.0; 6], &[6]);
    assert!(peak::copy_vec4(&odd, &odd).is_err());
}
