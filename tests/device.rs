//! Device: adapter selection by name, limits, the size guard, readback of what was written.
mod common;
use atomgrad::{Device, Error, Tensor};
use common::{device, own_device};

#[test]
fn an_unknown_adapter_name_is_an_error_listing_the_available_ones() {
    let e = Device::open(Some("no-such-adapter-xyz")).err().expect("must not open");
    let msg = e.to_string();
    assert!(msg.contains("no-such-adapter-xyz") && msg.contains("available"), "{msg}");
}

#[test]
fn the_adapter_found_by_default_can_be_picked_by_name() {
    let dev = device();
    let name = dev.info().name.clone();
    let again = Device::open(Some(&name[..name.len().min(6)])).unwrap();
    assert!(again.info().name.to_lowercase().contains(&name[..name.len().min(6)].to_lowercase()));
}

#[test]
fn tensors_beyond_the_binding_limit_are_refused_cleanly() {
    let dev = device();
    let limit = dev.max_binding();
    let n = (limit / 4 + 1) as usize;
    match Tensor::zeros(&dev, &[n]) {
        Err(Error::TooLarge { op, bytes, limit: l }) => {
            assert_eq!(op, "zeros");
            assert!(bytes > l);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // The device is still usable afterwards.
    assert_eq!(Tensor::from_slice(&dev, &[1.0, 2.0], &[2]).unwrap().to_vec().unwrap(), vec![1.0, 2.0]);
}

#[test]
fn upload_download_roundtrip_and_shape_errors() {
    let dev = device();
    let v: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
    let t = Tensor::from_slice(&dev, &v, &[10, 100]).unwrap();
    assert_eq!(t.to_vec().unwrap(), v);
    assert_eq!(t.reshape(&[1000]).unwrap().to_vec().unwrap(), v);
    assert!(t.reshape(&[3, 333]).is_err());
    assert!(Tensor::from_slice(&dev, &v, &[7]).is_err());
    let u = Tensor::from_u32(&dev, &[1, 2, 3], &[3]).unwrap();
    assert_eq!(u.to_vec_u32().unwrap(), vec![1, 2, 3]);
    assert!(u.to_vec().is_err());
    assert_eq!(Tensor::zeros(&dev, &[5]).unwrap().to_vec().unwrap(), vec![0.0; 5]);
}

#[test]
fn pooled_buffers_are_reused_after_a_submit() {
    let dev = own_device();
    let a = Tensor::zeros(&dev, &[1000]).unwrap();
    drop(a);
    dev.flush().unwrap();
    let created = dev.stats().buffers_created;
    let b = Tensor::zeros(&dev, &[900]).unwrap(); // same size class
    dev.flush().unwrap();
    assert_eq!(dev.stats().buffers_created, created);
    drop(b);
}

/// Eager code that records many large ops without a sync keeps every dropped buffer until the
/// next submit; past the release limit an allocation submits first, so memory stays bounded and
/// the results are the same.
#[test]
fn dropped_buffers_past_the_release_limit_are_submitted_and_reused() {
    let dev = own_device();
    dev.set_release_limit(8 << 20);
    let n = 1 << 20; // 4 MiB per tensor
    let before = dev.stats();
    let mut last = None;
    for i in 0..20 {
        let t = Tensor::from_slice(&dev, &[i as f32; 4], &[4]).unwrap();
        let big = Tensor::zeros(&dev, &[n]).unwrap();
        last = Some((t, big)); // the previous pair is dropped unsynced
    }
    let s = dev.stats();
    // 20 x 4 MiB recorded; at most the 8 MiB held back plus the live pair were ever created.
    assert!(
        s.bytes_created - before.bytes_created <= (16 << 20),
        "{} bytes created",
        s.bytes_created - before.bytes_created
    );
    assert!(s.submits > before.submits, "no submit on the way");
    let (t, big) = last.unwrap();
    assert_eq!(t.to_vec().unwrap(), vec![19.0; 4]);
    assert!(big.to_vec().unwrap().iter().all(|&v| v == 0.0));
}

#[test]
fn profiling_times_every_dispatch_per_kernel_and_changes_no_result() {
    let dev = own_device(); // the mode is per device: keep it away from the shared one
    if !dev.features().contains(wgpu::Features::TIMESTAMP_QUERY) {
        let e = dev.set_profiling(true).unwrap_err();
        assert!(e.to_string().contains("timestamp"), "{e}");
        return;
    }
    let a =
        Tensor::from_slice(&dev, &(0..96 * 80).map(|i| (i % 7) as f32 - 3.0).collect::<Vec<_>>(), &[96, 80]).unwrap();
    let b =
        Tensor::from_slice(&dev, &(0..80 * 72).map(|i| (i % 5) as f32 - 2.0).collect::<Vec<_>>(), &[80, 72]).unwrap();
    let run = || {
        let c = atomgrad::ops::matmul::matmul(&a, &b, false, false).unwrap();
        let d = atomgrad::ops::matmul::matmul(&a, &b, false, false).unwrap();
        let s = atomgrad::ops::softmax::softmax(&c, None).unwrap();
        (c.to_vec().unwrap(), d.to_vec().unwrap(), s.to_vec().unwrap())
    };
    let plain = run();
    assert_eq!(dev.profile(), (Vec::new(), 0), "nothing profiled yet");
    dev.set_profiling(true).unwrap();
    let before = dev.stats().dispatches;
    let profiled = run();
    let dispatches = dev.stats().dispatches - before;
    dev.set_profiling(false).unwrap();
    assert!(plain == profiled, "profiling changed a result");
    let (kernels, untimed) = dev.profile();
    assert_eq!(untimed, 0);
    assert_eq!(kernels.iter().map(|k| k.dispatches).sum::<u64>(), dispatches, "{kernels:?}");
    let mm: Vec<_> = kernels.iter().filter(|k| k.name.starts_with("matmul::mm_")).collect();
    assert_eq!(mm.len(), 1, "{kernels:?}");
    assert_eq!(mm[0].dispatches, 2, "{kernels:?}");
    assert!(kernels.iter().any(|k| k.name == "softmax::softmax_rows"), "{kernels:?}");
    assert!(kernels.iter().all(|k| k.ms.is_finite() && k.ms >= 0.0), "{kernels:?}");
    assert!(kernels.windows(2).all(|w| w[0].ms >= w[1].ms), "not sorted by time: {kernels:?}");
    // off: dispatches go back to the one long pass and the totals stay until reset
    run();
    assert_eq!(dev.profile().0, kernels);
    dev.reset_profile();
    assert_eq!(dev.profile(), (Vec::new(), 0));
    // more dispatches in one submit than the query set holds: the rest run untimed, counted
    dev.set_profiling(true).unwrap();
    let x = Tensor::from_slice(&dev, &[1.0, -2.0, 3.0], &[3]).unwrap();
    let ys: Vec<Tensor> = (0..2100)
        .map(|_| atomgrad::ops::elementwise::unary(&x, atomgrad::ops::elementwise::Unary::Relu).unwrap())
        .collect();
    dev.flush().unwrap();
    dev.set_profiling(false).unwrap();
    let (kernels, untimed) = dev.profile();
    assert_eq!((kernels.iter().map(|k| k.dispatches).sum::<u64>(), untimed), (2048, 52), "{kernels:?}");
    assert_eq!(ys[2099].to_vec().unwrap(), vec![1.0, 0.0, 3.0]);
}
