// Batch normalisation over channel axis 1 of x viewed as [N, C, S] (S = product of the spatial
// dims, 1 for [N, C]); each channel's statistics run over its M = N * S elements.
//   y = (x - mean[c]) * rstd[c] * gamma[c] + beta[c],   rstd = 1 / sqrt(var + eps)
// Training: mean / biased var of the batch, and the running statistics are updated in place
// (running = (1 - momentum) * running + momentum * batch, unbiased variance for running_var).
// Evaluation: mean / var are the running statistics.
// `stats` is [2, C]: row 0 mean, row 1 (biased) variance. Gradients, with xhat = (x - mean) * rstd:
//   dbeta = sum gy, dgamma = sum gy * xhat (per channel, over N and S)
//   training:   dx = gamma * rstd * (gy - dbeta / M - xhat * dgamma / M)
//   evaluation: dx = gamma * rstd * gy
// No atomics: every per-channel sum is a fixed-order partial sum per (channel, chunk), then a
// fixed-order loop over the chunks, so results are bit-reproducible. The partial sums come in two
// variants with the same output: *_partial (shared-memory tree, for GPUs) and *_loop (one
// invocation walks its chunk serially, no barriers, for CPU rasterisers such as lavapipe).
//
// Bindings (group 0): 0 = Params (uniform); then per entry point
//   stats_partial, stats_loop:  1 x (read), 2 part (write)   part[c, k] = (chunk mean, chunk M2)
//   stats_finalize: 1 part (read), 2 stats (write), 3 running_mean (read_write), 4 running_var (read_write)
//   eval_stats:     1 running_mean (read), 2 running_var (read), 3 stats (write)
//   normalize:      1 x, 2 stats, 3 gamma, 4 beta (read), 5 y (write)
//   grad_partial, grad_loop:    1 x, 2 gy, 3 stats (read), 4 part (write)
//                                 part[c, k] = (sum gy, sum gy * xhat)
//   grad_finalize:  1 part (read), 2 dbeta (write), 3 dgamma (write)
//   dx_train:       1 x, 2 gy, 3 stats, 4 gamma, 5 dbeta, 6 dgamma (read), 7 dx (write)
//   dx_eval:        1 gy, 2 stats, 3 gamma (read), 4 dx (write)
//   normalize4, dx_train4, dx_eval4: as normalize, dx_*, on vec4s where S is a multiple of 4.
// Workgroup: 256 x 1 x 1 except the *_loop entries (64 x 1 x 1).
//   *_partial: one workgroup per (channel c, chunk k) of `chunk` consecutive elements of the
//     channel's flattened (n, s) range; lane l takes elements l, l + 256, ...; then a 256 -> 1
//     tree. Workgroup id = c * chunks + k, folded into y past 65535 groups.
//   *_loop: one invocation per (channel, chunk), index gid.x + gid.y * nwg.x * 64; small
//     workgroups so that few chunks still spread over the CPU threads.
//   *_finalize, eval_stats: one invocation per channel, flat index gid.x + gid.y * nwg.x * 256.
//   normalize, dx_*: one workgroup per tile of 2048 elements of x (workgroup index
//     wid.x + wid.y * nwg.x), lane l takes elements l, l + 256, ..., l + 7 * 256 of the tile, so
//     loads stay contiguous across lanes; the channel of the first one costs a division, the
//     next ones are stepped without (integer division is slow on CPU rasterisers).

struct Params {
    c: u32,         // channels
    s: u32,         // spatial size (product of dims 2..)
    m: u32,         // N * S, elements per channel
    n: u32,         // invocations (elementwise) or workgroups (partial) that do work
    chunk: u32,     // elements of a channel per partial workgroup
    chunks: u32,    // chunks per channel
    eps: f32,
    momentum: f32,
    ds: u32,        // 256 % s: spatial step of the elementwise kernels' stride of 256
    dc: u32,        // (256 / s) % c: channel step of that stride
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// stats_partial
@group(0) @binding(1) var<storage, read> sp_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> sp_part: array<vec2<f32>>;
// stats_finalize
@group(0) @binding(1) var<storage, read> sf_part: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> sf_stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> sf_rmean: array<f32>;
@group(0) @binding(4) var<storage, read_write> sf_rvar: array<f32>;
// eval_stats
@group(0) @binding(1) var<storage, read> es_rmean: array<f32>;
@group(0) @binding(2) var<storage, read> es_rvar: array<f32>;
@group(0) @binding(3) var<storage, read_write> es_stats: array<f32>;
// normalize
@group(0) @binding(2) var<storage, read> nz_stats: array<f32>;
@group(0) @binding(3) var<storage, read> nz_gamma: array<f32>;
@group(0) @binding(4) var<storage, read> nz_beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> nz_y: array<f32>;
// grad_partial (x is sp_x)
@group(0) @binding(2) var<storage, read> gp_gy: array<f32>;
@group(0) @binding(3) var<storage, read> gp_stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> gp_part: array<vec2<f32>>;
// grad_finalize (part is sf_part)
@group(0) @binding(2) var<storage, read_write> gf_dbeta: array<f32>;
@group(0) @binding(3) var<storage, read_write> gf_dgamma: array<f32>;
// dx_train (x, gy, stats are sp_x, gp_gy, gp_stats)
@group(0) @binding(4) var<storage, read> dt_gamma: array<f32>;
@group(0) @binding(5) var<storage, read> dt_dbeta: array<f32>;
@group(0) @binding(6) var<storage, read> dt_dgamma: array<f32>;
@group(0) @binding(7) var<storage, read_write> dt_dx: array<f32>;
// dx_eval
@group(0) @binding(1) var<storage, read> de_gy: array<f32>;
@group(0) @binding(2) var<storage, read> de_stats: array<f32>;
@group(0) @binding(3) var<storage, read> de_gamma: array<f32>;
@group(0) @binding(4) var<storage, read_write> de_dx: array<f32>;

// normalize4, dx_train4, dx_eval4: the same kernels on whole vec4s (S a multiple of 4, so a vec4
// never straddles channels; p.n and p.s count vec4s there, p.m still elements)
@group(0) @binding(1) var<storage, read> v_1: array<vec4<f32>>; // x (dx_eval4: gy)
@group(0) @binding(2) var<storage, read> v_2: array<vec4<f32>>; // gy (dx_train4)
@group(0) @binding(4) var<storage, read_write> v_out4: array<vec4<f32>>; // dx (dx_eval4)
@group(0) @binding(5) var<storage, read_write> v_out5: array<vec4<f32>>; // y (normalize4)
@group(0) @binding(7) var<storage, read_write> v_out7: array<vec4<f32>>; // dx (dx_train4)

var<workgroup> tree: array<vec2<f32>, 256>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// Offset in x of element m (= n * S + s) of channel c.
fn offset(c: u32, m: u32) -> u32 {
    let n = m / p.s;
    return (n * p.c + c) * p.s + (m - n * p.s);
}

// Elements per lane, and per workgroup, of the elementwise kernels.
const PER: u32 = 8u;
const TILE: u32 = 2048u;

// Element i of x, its spatial index s and its channel c.
struct Pos {
    i: u32,
    s: u32,
    c: u32,
}

fn pos_start(wid: vec3<u32>, nwg: vec3<u32>, lane: u32) -> Pos {
    let i = (wid.x + wid.y * nwg.x) * TILE + lane;
    let r = i / p.s;
    return Pos(i, i - r * p.s, r % p.c);
}

// The element 256 further on: i + 256 = (r + 256 / s) * s + s + 256 % s, carried once.
fn pos_next(q: Pos) -> Pos {
    var s = q.s + p.ds;
    var c = q.c + p.dc;
    if (s >= p.s) {
        s -= p.s;
        c += 1u;
    }
    if (c >= p.c) {
        c -= p.c; // c <= 2 * (C - 1) + 1 here, one subtraction suffices
    }
    return Pos(q.i + 256u, s, c);
}

fn rstd_of(v: f32) -> f32 {
    return 1.0 / sqrt(v + p.eps);
}

// Sums tree[0..256] into tree[0] in a fixed order; every lane must call it.
fn tree_sum(lane: u32, v: vec2<f32>) -> vec2<f32> {
    tree[lane] = v;
    workgroupBarrier();
    for (var h = 128u; h > 0u; h >>= 1u) {
        if (lane < h) {
            tree[lane] = tree[lane] + tree[lane + h];
        }
        workgroupBarrier();
    }
    let r = tree[0];
    workgroupBarrier(); // tree may be reused right after
    return r;
}

@compute @workgroup_size(256)
fn stats_partial(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = wid.x + wid.y * nwg.x;
    let live = w < p.n; // uniform per workgroup; dead groups still reach every barrier
    let c = w / p.chunks;
    let k = w % p.chunks;
    let start = k * p.chunk;
    let stop = select(start, min(start + p.chunk, p.m), live);
    let lane = lid.x;
    // Two passes over the chunk (the second hits the cache): mean first, then squared
    // deviations from it, which keeps the variance accurate when |mean| >> std.
    var s = 0.0;
    for (var m = start + lane; m < stop; m += 256u) {
        s += sp_x[offset(c, m)];
    }
    let count = f32(stop - start);
    let mean = tree_sum(lane, vec2<f32>(s, 0.0)).x / max(count, 1.0);
    var q = 0.0;
    for (var m = start + lane; m < stop; m += 256u) {
        let d = sp_x[offset(c, m)] - mean;
        q += d * d;
    }
    let m2 = tree_sum(lane, vec2<f32>(q, 0.0)).x;
    if (live && lane == 0u) {
        sp_part[w] = vec2<f32>(mean, m2);
    }
}

// Serial walk over elements start.. of channel c: offset in x and spatial index, advanced
// without divisions.
struct Walk {
    o: u32,
    s: u32,
}

fn walk_start(c: u32, start: u32) -> Walk {
    let n = start / p.s;
    let s = start - n * p.s;
    return Walk((n * p.c + c) * p.s + s, s);
}

fn walk_next(w: Walk) -> Walk {
    if (w.s + 1u == p.s) {
        return Walk(w.o + 1u + (p.c - 1u) * p.s, 0u); // next sample, same channel
    }
    return Walk(w.o + 1u, w.s + 1u);
}

@compute @workgroup_size(64)
fn stats_loop(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = gid.x + gid.y * nwg.x * 64u;
    if (w >= p.n) { return; }
    let c = w / p.chunks;
    let start = (w % p.chunks) * p.chunk;
    let len = min(p.chunk, p.m - start);
    var it = walk_start(c, start);
    var s = 0.0;
    for (var j = 0u; j < len; j++) {
        s += sp_x[it.o];
        it = walk_next(it);
    }
    let mean = s / f32(len);
    it = walk_start(c, start);
    var q = 0.0;
    for (var j = 0u; j < len; j++) {
        let d = sp_x[it.o] - mean;
        q += d * d;
        it = walk_next(it);
    }
    sp_part[w] = vec2<f32>(mean, q);
}

@compute @workgroup_size(256)
fn stats_finalize(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = flat(gid, nwg);
    if (c >= p.c) { return; }
    // Chan et al.'s pairwise merge of (count, mean, M2), chunk by chunk in order.
    var cnt = 0.0;
    var mean = 0.0;
    var m2 = 0.0;
    for (var k = 0u; k < p.chunks; k++) {
        let part = sf_part[c * p.chunks + k];
        let nb = f32(min(p.chunk, p.m - k * p.chunk));
        let tot = cnt + nb;
        let d = part.x - mean;
        mean += d * (nb / tot);
        m2 += part.y + d * d * (cnt * nb / tot);
        cnt = tot;
    }
    let var_b = m2 / f32(p.m);
    sf_stats[c] = mean;
    sf_stats[p.c + c] = var_b;
    let var_u = m2 / f32(p.m - 1u); // the host rejects M = 1 in training mode
    sf_rmean[c] = (1.0 - p.momentum) * sf_rmean[c] + p.momentum * mean;
    sf_rvar[c] = (1.0 - p.momentum) * sf_rvar[c] + p.momentum * var_u;
}

@compute @workgroup_size(256)
fn eval_stats(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = flat(gid, nwg);
    if (c >= p.c) { return; }
    es_stats[c] = es_rmean[c];
    es_stats[p.c + c] = es_rvar[c];
}

@compute @workgroup_size(256)
fn normalize(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    var q = pos_start(wid, nwg, lid.x);
    for (var j = 0u; j < PER; j++) {
        if (q.i >= p.n) { return; }
        let c = q.c;
        let xhat = (sp_x[q.i] - nz_stats[c]) * rstd_of(nz_stats[p.c + c]);
        nz_y[q.i] = xhat * nz_gamma[c] + nz_beta[c];
        q = pos_next(q);
    }
}

@compute @workgroup_size(256)
fn grad_partial(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = wid.x + wid.y * nwg.x;
    let live = w < p.n;
    let c = w / p.chunks;
    let k = w % p.chunks;
    let start = k * p.chunk;
    let stop = select(start, min(start + p.chunk, p.m), live);
    let lane = lid.x;
    var mean = 0.0;
    var rstd = 0.0;
    if (live) {
        mean = gp_stats[c];
        rstd = rstd_of(gp_stats[p.c + c]);
    }
    var acc = vec2<f32>(0.0, 0.0);
    for (var m = start + lane; m < stop; m += 256u) {
        let o = offset(c, m);
        let g = gp_gy[o];
        acc += vec2<f32>(g, g * (sp_x[o] - mean) * rstd);
    }
    let r = tree_sum(lane, acc);
    if (live && lane == 0u) {
        gp_part[w] = r;
    }
}

@compute @workgroup_size(64)
fn grad_loop(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let w = gid.x + gid.y * nwg.x * 64u;
    if (w >= p.n) { return; }
    let c = w / p.chunks;
    let start = (w % p.chunks) * p.chunk;
    let len = min(p.chunk, p.m - start);
    let mean = gp_stats[c];
    let rstd = rstd_of(gp_stats[p.c + c]);
    var it = walk_start(c, start);
    var acc = vec2<f32>(0.0, 0.0);
    for (var j = 0u; j < len; j++) {
        let g = gp_gy[it.o];
        acc += vec2<f32>(g, g * (sp_x[it.o] - mean) * rstd);
        it = walk_next(it);
    }
    gp_part[w] = acc;
}

@compute @workgroup_size(256)
fn grad_finalize(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = flat(gid, nwg);
    if (c >= p.c) { return; }
    var acc = vec2<f32>(0.0, 0.0);
    for (var k = 0u; k < p.chunks; k++) {
        acc += sf_part[c * p.chunks + k];
    }
    gf_dbeta[c] = acc.x;
    gf_dgamma[c] = acc.y;
}

@compute @workgroup_size(256)
fn dx_train(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let inv_m = 1.0 / f32(p.m);
    var q = pos_start(wid, nwg, lid.x);
    for (var j = 0u; j < PER; j++) {
        if (q.i >= p.n) { return; }
        let c = q.c;
        let rstd = rstd_of(gp_stats[p.c + c]);
        let xhat = (sp_x[q.i] - gp_stats[c]) * rstd;
        dt_dx[q.i] = dt_gamma[c] * rstd * (gp_gy[q.i] - dt_dbeta[c] * inv_m - xhat * dt_dgamma[c] * inv_m);
        q = pos_next(q);
    }
}

@compute @workgroup_size(256)
fn dx_eval(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    var q = pos_start(wid, nwg, lid.x);
    for (var j = 0u; j < PER; j++) {
        if (q.i >= p.n) { return; }
        let c = q.c;
        de_dx[q.i] = de_gamma[c] * rstd_of(de_stats[p.c + c]) * de_gy[q.i];
        q = pos_next(q);
    }
}

@compute @workgroup_size(256)
fn normalize4(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    var q = pos_start(wid, nwg, lid.x);
    for (var j = 0u; j < PER; j++) {
        if (q.i >= p.n) { return; }
        let c = q.c;
        let xhat = (v_1[q.i] - nz_stats[c]) * rstd_of(nz_stats[p.c + c]);
        v_out5[q.i] = xhat * nz_gamma[c] + nz_beta[c];
        q = pos_next(q);
    }
}

@compute @workgroup_size(256)
fn dx_train4(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let inv_m = 1.0 / f32(p.m);
    var q = pos_start(wid, nwg, lid.x);
    for (var j = 0u; j < PER; j++) {
        if (q.i >= p.n) { return; }
        let c = q.c;
        let rstd = rstd_of(gp_stats[p.c + c]);
        let xhat = (v_1[q.i] - gp_stats[c]) * rstd;
        v_out7[q.i] = dt_gamma[c] * rstd * (v_2[q.i] - dt_dbeta[c] * inv_m - xhat * dt_dgamma[c] * inv_m);
        q = pos_next(q);
    }
}

@compute @workgroup_size(256)
fn dx_eval4(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    var q = pos_start(wid, nwg, lid.x);
    for (var j = 0u; j < PER; j++) {
        if (q.i >= p.n) { return; }
        let c = q.c;
        v_out4[q.i] = de_gamma[c] * rstd_of(de_stats[p.c + c]) * v_1[q.i];
        q = pos_next(q);
    }
}
