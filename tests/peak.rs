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
