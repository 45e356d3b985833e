//! Matching losses on encoder features (paper eq. 4 and 5), in tch so gradients flow to the
//! synthetic cells.
//!
//! DC uses a single linear task head `logits = f Wᵀ + b` on the frozen encoder's features. For
//! that head the cross-entropy gradient has a closed form, `∂ℓ/∂W = (softmax(fWᵀ+b) − Y)ᵀ f / n`,
//! which is itself differentiable in `f`: the synthetic gradient therefore carries its graph
//! without a double backward (what `create_graph=True` achieves in the reference code), and the
//! real gradient is simply computed from detached features. A test checks the closed form
//! against autograd.
use tch::{Kind, Tensor};

/// Rows `[start, start+len)` of the synthetic set belong to one class.
#[derive(Clone, Copy, Debug)]
pub struct ClassSlice {
    pub class: i64,
    pub start: i64,
    pub len: i64,
}

/// DM (eq. 4, squared as in the reference implementation):
/// `Σ_c ‖μ_c(real) − mean_{s ∈ S_c} F(s)‖²`. `real_means` is `[n_classes, d]`.
pub fn dm_loss(feat_syn: &Tensor, slices: &[ClassSlice], real_means: &Tensor) -> Tensor {
    let mut total = Tensor::zeros([], (Kind::Float, feat_syn.device()));
    for s in slices {
        let mean_syn = feat_syn.narrow(0, s.start, s.len).mean_dim(Some([0i64].as_slice()), false, Kind::Float);
        let diff = real_means.get(s.class) - mean_syn;
        total += diff.square().sum(Kind::Float);
    }
    total
}

/// Gene-space matching: `Σ_i ‖S_i − T_i‖²` between the decoded cells `s` and their targets `t`
/// (both log-normalised, `[n, genes]`): each synthetic cell against the mean cell of the real
/// cluster it stands for (SPC k-means clusters per class; at SPC 1 the class mean). The
/// synthetic set thus becomes a k-means quantisation of each class in gene space.
pub fn gene_loss(s: &Tensor, t: &Tensor) -> Tensor {
    (s - t).square().sum(Kind::Float)
}

/// KIP with a linear kernel (Nguyen et al. 2021), with an intercept: ridge regression of the
/// one-hot labels `ys` (`[n, k]`) on the decoded cells `s` (`[n, genes]`, centred on their
/// mean), solved in closed form, predicts the real cells `x` (`[r, genes]`); the mean squared
/// error against their one-hot labels `yx` (`[r, k]`). The ridge is `ridge` × the mean squared
/// norm of the centred cells, so the term does not depend on the data's scale. Gradients reach
/// `s` through the solve.
pub fn kip_loss(x: &Tensor, yx: &Tensor, s: &Tensor, ys: &Tensor, lambda_rel: f64) -> Tensor {
    let m = s.mean_dim(Some([0i64].as_slice()), true, Kind::Float);
    let sc = s - &m;
    let xc = x - &m;
    let kss = sc.matmul(&sc.tr());
    let n = kss.size()[0];
    let lam = kss.diagonal(0, 0, 1).mean(Kind::Float).detach() * lambda_rel + 1e-12;
    let eye = Tensor::eye(n, (Kind::Float, s.device()));
    let ybar = ys.mean_dim(Some([0i64].as_slice()), true, Kind::Float);
    let alpha = Tensor::linalg_solve(&(kss + eye * lam), &(ys - &ybar), true);
    let pred = xc.matmul(&sc.tr()).matmul(&alpha) + ybar;
    (pred - yx).square().sum_dim_intlist(Some([1i64].as_slice()), false, Kind::Float).mean(Kind::Float)
}

/// `∂ CE(f Wᵀ + b, y) / ∂W` for a batch of one class `y`, in closed form: `[n_classes, d]`.
pub fn head_weight_grad(w: &Tensor, b: &Tensor, feats: &Tensor, class: i64) -> Tensor {
    let n = feats.size()[0];
    let p = (feats.matmul(&w.tr()) + b).softmax(-1, Kind::Float);
    let onehot = Tensor::zeros_like(&p).index_fill(1, &Tensor::from(class).to_device(p.device()), 1.0);
    (p - onehot).tr().matmul(feats) / (n as f64)
}

/// DatasetCondensation's layer distance for a weight matrix: `Σ_rows (1 − cos(g_syn, g_real))`.
pub fn gradient_distance(g_syn: &Tensor, g_real: &Tensor) -> Tensor {
    let dot = (g_syn * g_real).sum_dim_intlist(Some([-1i64].as_slice()), false, Kind::Float);
    let norms = g_syn.norm_scalaropt_dim(2, [-1i64].as_slice(), false) * g_real.norm_scalaropt_dim(2, [-1i64].as_slice(), false);
    let cos: Tensor = dot / (norms + 1e-6);
    (cos.neg() + 1.0).sum(Kind::Float)
}

/// DC (eq. 5) summed over classes: the head's weight gradient on each class's synthetic cells
/// against that on a batch of its real cells (`real_feats[k]` for `slices[k]`). As in the
/// reference, the bias gradient is not matched.
pub fn dc_loss(w: &Tensor, b: &Tensor, feat_syn: &Tensor, slices: &[ClassSlice], real_feats: &[Tensor]) -> Tensor {
    let mut total = Tensor::zeros([], (Kind::Float, feat_syn.device()));
    for (s, real) in slices.iter().zip(real_feats) {
        let g_real = head_weight_grad(w, b, real, s.class).detach();
        let g_syn = head_weight_grad(w, b, &feat_syn.narrow(0, s.start, s.len), s.class);
        total += gradient_distance(&g_syn, &g_real);
    }
    total
}

/// One SGD step of the task head on (detached) synthetic features with labels `y`.
pub fn train_head_step(w: &mut Tensor, b: &mut Tensor, feats: &Tensor, y: &Tensor, lr: f64) {
    tch::no_grad(|| {
        let n = feats.size()[0] as f64;
        let p = (feats.matmul(&w.tr()) + &*b).softmax(-1, Kind::Float);
        let onehot = p.zeros_like().scatter_value(1, &y.unsqueeze(1), 1.0);
        let g = p - onehot;
        let gw = g.tr().matmul(feats) / n;
        let gb = g.sum_dim_intlist(Some([0i64].as_slice()), false, Kind::Float) / n;
        *w = &*w - gw * lr;
        *b = &*b - gb * lr;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_form_gradient_equals_autograd() {
        tch::manual_seed(3);
        let w = Tensor::randn([4, 6], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let b = Tensor::randn([4], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let f = Tensor::randn([5, 6], (Kind::Float, tch::Device::Cpu));
        let y = Tensor::from_slice(&[2i64; 5]);
        let loss = (f.matmul(&w.tr()) + &b).cross_entropy_for_logits(&y);
        let auto = Tensor::run_backward(&[&loss], &[&w], false, false).pop().unwrap();
        let closed = head_weight_grad(&w, &b, &f, 2);
        let diff = f64::try_from((auto - closed).abs().max()).unwrap();
        assert!(diff < 1e-6, "max difference {diff}");
    }

    #[test]
    fn dc_gradient_reaches_synthetic_features() {
        tch::manual_seed(4);
        let w = Tensor::randn([3, 8], (Kind::Float, tch::Device::Cpu));
        let b = Tensor::zeros([3], (Kind::Float, tch::Device::Cpu));
        let syn = Tensor::randn([6, 8], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let real: Vec<Tensor> = (0..3).map(|_| Tensor::randn([10, 8], (Kind::Float, tch::Device::Cpu))).collect();
        let slices: Vec<ClassSlice> = (0..3).map(|c| ClassSlice { class: c, start: 2 * c, len: 2 }).collect();
        let loss = dc_loss(&w, &b, &syn, &slices, &real);
        let g = Tensor::run_backward(&[&loss], &[&syn], false, false).pop().unwrap();
        assert!(f64::try_from(g.abs().sum(Kind::Float)).unwrap() > 0.0);
        // identical synthetic and real features: zero distance
        let same = real[0].narrow(0, 0, 2);
        let d = f64::try_from(gradient_distance(
            &head_weight_grad(&w, &b, &same, 0),
            &head_weight_grad(&w, &b, &same, 0),
        ))
        .unwrap();
        assert!(d.abs() < 1e-4, "{d}");
        let m = dm_loss(&syn, &slices, &Tensor::zeros([3, 8], (Kind::Float, tch::Device::Cpu)));
        assert!(f64::try_from(m).unwrap() > 0.0);
    }

    #[test]
    fn kip_fits_its_own_cells_and_prefers_cells_that_separate_the_classes() {
        tch::manual_seed(5);
        let cpu = (Kind::Float, tch::Device::Cpu);
        // Two classes apart along the first gene, noise elsewhere.
        let y: Vec<i64> = (0..40).map(|i| i % 2).collect();
        let yt = Tensor::from_slice(&y);
        let shift = (yt.to_kind(Kind::Float) * 4.0 - 2.0).unsqueeze(1) * Tensor::from_slice(&[1f32, 0.0, 0.0, 0.0, 0.0]).unsqueeze(0);
        let x = Tensor::randn([40, 5], cpu) + shift;
        let yx = yt.one_hot(2).to_kind(Kind::Float);
        let ys = Tensor::from_slice(&[0i64, 1]).one_hot(2).to_kind(Kind::Float);
        let means = Tensor::stack(&[x.index_select(0, &yt.eq(0).nonzero().squeeze_dim(1)).mean_dim(Some([0i64].as_slice()), false, Kind::Float), x.index_select(0, &yt.eq(1).nonzero().squeeze_dim(1)).mean_dim(Some([0i64].as_slice()), false, Kind::Float)], 0);
        // Predicting its own cells with a small ridge: their labels, near enough.
        let own = f64::try_from(kip_loss(&means, &ys, &means, &ys, 1e-6)).unwrap();
        assert!(own < 1e-6, "own cells {own}");
        // The class means predict the real cells far better than the same cells with the
        // labels swapped.
        let right = f64::try_from(kip_loss(&x, &yx, &means, &ys, 0.1)).unwrap();
        let swapped = f64::try_from(kip_loss(&x, &yx, &means.flip([0]), &ys, 0.1)).unwrap();
        assert!(right < 0.5 && swapped > 1.0, "{right} vs {swapped}");
        // Gradients reach the cells.
        let s = means.detach().set_requires_grad(true);
        let g = Tensor::run_backward(&[&kip_loss(&x, &yx, &s, &ys, 0.1)], &[&s], false, false).pop().unwrap();
        assert!(f64::try_from(g.abs().sum(Kind::Float)).unwrap() > 0.0);
    }
}
