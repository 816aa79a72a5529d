// Row softmax family over the last axis of a tensor viewed as [rows, L], with an optional mask
// [M, L] (nonzero = keep, 0 = masked out) shared by `rows / M` consecutive rows (row r uses mask
// row r / group), plus cross-entropy from logits with u32 labels:
//   softmax:      y = exp(x - max) / sum exp(x - max) over kept entries, masked entries 0
//   log-softmax:  y = x - max - log(sum exp(x - max)), masked entries MASKED_LOG (-1e30)
//   A fully masked row gives softmax 0 everywhere and log-softmax MASKED_LOG everywhere (finite
//   on purpose: 0 * y stays 0 downstream, and exp(y) is exactly the all-zero softmax row).
//   softmax_backward:     gx = y * (gy - sum(gy * y))
//   log_softmax_backward: gx = gy - exp(y) * sum over kept entries of gy, masked entries 0
//   ce_forward:   loss[r] = logsumexp(x[r, :]) - x[r, label[r]] (NaN when label[r] >= C; the data
//                 loaders validate labels on the host), lse[r] saved for the backward pass
//   ce_backward:  gx[r, c] = (exp(x[r, c] - lse[r]) - [c == label[r]]) * gy[0] * inv_n
//                 (gy is the 1-element gradient of the mean loss, read here, never on the host)
// Max and sum use the one-pass online form (running max, sum rescaled when the max grows), so a
// row is read once for the statistics and once to write; logits of +-1e4 stay finite.
//
// Bindings (group 0): 0 = Params (uniform); then per entry point
//   softmax_rows:          1 x (read), 2 mask (read; x again when unmasked, MASKED = 0), 3 y (write)
//   softmax_backward:      1 y (read), 2 gy (read), 3 gx (write)
//   log_softmax_backward:  1 y (read), 2 gy (read), 3 mask (read; y again when unmasked), 4 gx (write)
//   ce_forward:            1 x (read), 2 labels (u32 read), 3 loss (write), 4 lse (write)
//   ce_backward:           1 x, 2 labels (u32), 3 lse, 4 gy (1 element) (read), 5 gx (write)
// Workgroup: 256 x 1 x 1; the grid folds into y past 65535 groups. Row kernels (softmax_rows,
// softmax_backward, log_softmax_backward): LANES invocations per row, 256 / LANES rows per
// workgroup, row (wid.x + wid.y * nwg.x) * (256 / LANES) + t / LANES. LANES = 1 (CPU rasterisers):
// one invocation loops over its row, no barriers. LANES = 32 (GPUs): lane l reads entries l,
// l + 32, .. so a team's loads coalesce (one invocation per row reads 4 L bytes apart from its
// neighbours), and the lanes' partial statistics merge through workgroup memory in a fixed tree
// order (deterministic). ce_forward: one invocation per row; ce_backward: one per element (flat
// index gid.x + gid.y * nwg.x * 256).
// Override constants: LOG (softmax_rows) 0 = softmax, 1 = log-softmax; MASKED 0/1; LANES 1/32.

struct Params {
    rows: u32,   // rows (row kernels) or elements (ce_backward) to produce
    len: u32,    // L, or the number of classes C
    group: u32,  // rows sharing one mask row (rows / M)
    inv_n: f32,  // ce_backward: 1 / N for the mean
}

override LOG: u32 = 0u;
override MASKED: u32 = 0u;
// Invocations per row of the row kernels: 1 (CPU adapters, no barriers) or 32 (GPU teams).
override LANES: u32 = 1u;

const MASKED_LOG: f32 = -1e30;
const LOWEST: f32 = -3.4028235e38;

@group(0) @binding(0) var<uniform> p: Params;

// softmax_rows
@group(0) @binding(1) var<storage, read> s_x: array<f32>;
@group(0) @binding(2) var<storage, read> s_mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> s_y: array<f32>;
// softmax_backward / log_softmax_backward
@group(0) @binding(1) var<storage, read> b_y: array<f32>;
@group(0) @binding(2) var<storage, read> b_gy: array<f32>;
@group(0) @binding(3) var<storage, read_write> b_gx: array<f32>;
@group(0) @binding(3) var<storage, read> lb_mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> lb_gx: array<f32>;
// ce_forward / ce_backward
@group(0) @binding(2) var<storage, read> ce_labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> ce_loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> ce_lse_out: array<f32>;
@group(0) @binding(3) var<storage, read> ce_lse: array<f32>;
@group(0) @binding(4) var<storage, read> ce_gy: array<f32>;
@group(0) @binding(5) var<storage, read_write> ce_gx: array<f32>;

fn flat(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * 256u;
}

// Running (max, sum of exp(x - max)) updated with one more value.
fn online(st: vec2<f32>, v: f32) -> vec2<f32> {
    if (v > st.x) {
        return vec2<f32>(v, st.y * exp(st.x - v) + 1.0);
    }
    return vec2<f32>(st.x, st.y + exp(v - st.x));
}

// Row r and lane of invocation t: LANES invocations per row, 256 / LANES rows per workgroup.
fn row_of(wid: vec3<u32>, nwg: vec3<u32>, t: u32) -> vec2<u32> {
    return vec2<u32>((wid.x + wid.y * nwg.x) * (256u / LANES) + t / LANES, t % LANES);
}

// Online statistics (max, sum of exp, kept entries) of a row, merged.
fn merge_stats(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    let m = max(a.x, b.x);
    return vec4<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m), a.z + b.z, 0.0);
}

var<workgroup> team_st: array<vec4<f32>, 256>;

// v merged over the row's lanes in a fixed tree (16, 8, 4, 2, 1), read back by every lane: as
// online statistics (merge_stats) or summed; with one lane per row, v itself and no barrier.
fn team_reduce(t: u32, v: vec4<f32>, stats: bool) -> vec4<f32> {
    if (LANES == 1u) { return v; }
    team_st[t] = v;
    workgroupBarrier();
    let lane = t % LANES;
    for (var s = LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            if (stats) {
                team_st[t] = merge_stats(team_st[t], team_st[t + s]);
            } else {
                team_st[t] += team_st[t + s];
            }
        }
        workgroupBarrier();
    }
    let r = team_st[t - lane];
    workgroupBarrier(); // team_st is free for the next reduction
    return r;
}

// The row's sum of v over its lanes.
fn team_sum(t: u32, v: f32) -> f32 {
    return team_reduce(t, vec4<f32>(v, 0.0, 0.0, 0.0), false).x;
}

@compute @workgroup_size(256)
fn softmax_rows(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // Rows past the end still join the barriers; they read and write nothing.
    let rl = row_of(wid, nwg, t);
    let r = rl.x;
    let lane = rl.y;
    let live = r < p.rows;
    let base = r * p.len;
    var mbase = 0u;
    if (MASKED == 1u) { mbase = (r / p.group) * p.len; }
    var st = vec2<f32>(LOWEST, 0.0);
    var kept = 0.0;
    if (live) {
        for (var l = lane; l < p.len; l += LANES) {
            if (MASKED == 1u) {
                if (s_mask[mbase + l] == 0.0) { continue; }
            }
            st = online(st, s_x[base + l]);
            kept += 1.0;
        }
    }
    let all = team_reduce(t, vec4<f32>(st, kept, 0.0), true);
    if (!live) { return; }
    // log(sum) and 1/sum are only used when some entry is kept (sum >= 1 then).
    let any = all.z > 0.0;
    let log_sum = log(max(all.y, 1.0));
    let inv_sum = 1.0 / max(all.y, 1.0);
    for (var l = lane; l < p.len; l += LANES) {
        var keep = any;
        if (MASKED == 1u) { keep = keep && s_mask[mbase + l] != 0.0; }
        let d = s_x[base + l] - all.x;
        if (LOG == 1u) {
            s_y[base + l] = select(MASKED_LOG, d - log_sum, keep);
        } else {
            s_y[base + l] = select(0.0, exp(d) * inv_sum, keep);
        }
    }
}

@compute @workgroup_size(256)
fn softmax_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let rl = row_of(wid, nwg, t);
    let live = rl.x < p.rows;
    let base = rl.x * p.len;
    // Masked entries have y = 0, so they neither add to the dot product nor get a gradient.
    var dot = 0.0;
    if (live) {
        for (var l = rl.y; l < p.len; l += LANES) {
            dot += b_gy[base + l] * b_y[base + l];
        }
    }
    dot = team_sum(t, dot);
    if (!live) { return; }
    for (var l = rl.y; l < p.len; l += LANES) {
        b_gx[base + l] = b_y[base + l] * (b_gy[base + l] - dot);
    }
}

@compute @workgroup_size(256)
fn log_softmax_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let rl = row_of(wid, nwg, t);
    let live = rl.x < p.rows;
    let base = rl.x * p.len;
    var mbase = 0u;
    if (MASKED == 1u) { mbase = (rl.x / p.group) * p.len; }
    // Masked entries are constants of the input: they take no gradient and add nothing to the sum.
    var total = 0.0;
    if (live) {
        for (var l = rl.y; l < p.len; l += LANES) {
            if (MASKED == 1u) {
                if (lb_mask[mbase + l] == 0.0) { continue; }
            }
            total += b_gy[base + l];
        }
    }
    total = team_sum(t, total);
    if (!live) { return; }
    for (var l = rl.y; l < p.len; l += LANES) {
        var keep = true;
        if (MASKED == 1u) { keep = lb_mask[mbase + l] != 0.0; }
        lb_gx[base + l] = select(0.0, b_gy[base + l] - exp(b_y[base + l]) * total, keep);
    }
}

@compute @workgroup_size(256)
fn ce_forward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = flat(gid, nwg);
    if (r >= p.rows) { return; }
    let base = r * p.len;
    var st = vec2<f32>(LOWEST, 0.0);
    for (var c = 0u; c < p.len; c++) {
        st = online(st, s_x[base + c]);
    }
    let lse = st.x + log(st.y);
    ce_lse_out[r] = lse;
    let label = ce_labels[r];
    if (label >= p.len) {
        ce_loss[r] = bitcast<f32>(0x7fc00000u); // NaN: a bad label must not read out of bounds
        return;
    }
    ce_loss[r] = lse - s_x[base + label];
}

@compute @workgroup_size(256)
fn ce_backward(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat(gid, nwg);
    if (i >= p.rows) { return; }
    let r = i / p.len;
    let c = i % p.len;
    let label = ce_labels[r];
    let scale = ce_gy[0] * p.inv_n;
    let prob = exp(s_x[i] - ce_lse[r]);
    let g = (prob - select(0.0, 1.0, c == label)) * scale;
    // A bad label poisons its row's gradient as it poisons its loss.
    ce_gx[i] = select(g, bitcast<f32>(0x7fc00000u), label >= p.len);
}
