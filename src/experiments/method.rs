//! The methods a comparison trains: the shared vocabulary of every task. Adding a method means a
//! variant here (its slug, name and whether lambda weighs it) and its term in [`objective`]
//! (classifiers) or in `gan::Gan::record_g` (GANs).

use crate::atom::{atom_terms, hinge_lp, importance_budget, AtomConfig, Norm, TokenMask};
use crate::autodiff::Var;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// A training objective: the task loss alone or with one regulariser on the latent z.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Cross-entropy alone, no importance gate (for GANs: the plain GAN). The baseline.
    Ce,
    /// Importance gate and its budget, lambda = 0 (the ablation the spec asks for).
    Gate,
    HingeL1,
    HingeL2,
    #[serde(rename = "simclr")]
    SimClr,
    /// Importance gate + budget + L_A.
    Atom,
}

impl Method {
    pub const ALL: [Method; 6] =
        [Method::Ce, Method::Gate, Method::HingeL1, Method::HingeL2, Method::SimClr, Method::Atom];

    /// Whether the importance gate sits in the model.
    pub fn gated(self) -> bool {
        matches!(self, Method::Gate | Method::Atom)
    }
    /// Whether lambda weighs the method's regulariser (so a lambda grid applies to it).
    pub fn uses_lambda(self) -> bool {
        matches!(self, Method::HingeL1 | Method::HingeL2 | Method::SimClr | Method::Atom)
    }
    pub fn name(self) -> &'static str {
        match self {
            Method::Ce => "cross-entropy",
            Method::Gate => "gate only",
            Method::HingeL1 => "+hinge-L1",
            Method::HingeL2 => "+hinge-L2",
            Method::SimClr => "+SimCLR",
            Method::Atom => "+atom (L_A)",
        }
    }
    /// The name in GAN tables and plots ([`Method::Ce`] is the plain GAN).
    pub fn gan_name(self) -> &'static str {
        match self {
            Method::Ce => "GAN",
            Method::Gate => "GAN + gate only",
            Method::HingeL1 => "GAN + hinge-L1",
            Method::HingeL2 => "GAN + hinge-L2",
            Method::SimClr => "GAN + SimCLR",
            Method::Atom => "GAN + atom (L_A)",
        }
    }
    pub fn slug(self) -> &'static str {
        match self {
            Method::Ce => "ce",
            Method::Gate => "gate",
            Method::HingeL1 => "hinge-l1",
            Method::HingeL2 => "hinge-l2",
            Method::SimClr => "simclr",
            Method::Atom => "atom",
        }
    }
    /// A method by slug (`ce`, `gate`, ...).
    pub fn parse(name: &str) -> Result<Method> {
        Method::ALL.into_iter().find(|m| m.slug() == name.trim()).ok_or_else(|| {
            let all: Vec<&str> = Method::ALL.iter().map(|m| m.slug()).collect();
            Error::Config(format!("unknown method {name:?} (available: {})", all.join(", ")))
        })
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Method> {
        Method::parse(s)
    }
}

/// The regularisers' settings a classifier task carries (weights, margin, temperature).
#[derive(Clone, Copy, Debug)]
pub struct Regularisers<'a> {
    pub atom: &'a AtomConfig,
    /// Weight of the hinge and SimCLR terms (L_A's is `atom.lambda`).
    pub lambda: f32,
    pub margin: f32,
    pub tau: f32,
}

/// The training loss of `method`: the task loss `ce` plus the method's regulariser on the latent
/// `z` (and, for the gated methods, the tokens `h` and importances `w`). `views` builds SimCLR's
/// two projected augmented views; it is called only for [`Method::SimClr`].
#[allow(clippy::too_many_arguments)]
pub fn objective(
    method: Method,
    ce: Var,
    z: &Var,
    h: &Var,
    w: Option<&Var>,
    mask: &TokenMask,
    reg: Regularisers,
    step: usize,
    views: impl FnOnce() -> Result<(Var, Var)>,
) -> Result<Var> {
    let gate =
        |w: Option<&Var>| w.cloned().ok_or_else(|| Error::Config(format!("{method:?} needs the importance gate")));
    let atom = reg.atom;
    match method {
        Method::Ce => Ok(ce),
        Method::Gate => ce.add(&importance_budget(&gate(w)?, mask, atom.tau_lo, atom.tau_hi)?.scale(atom.mu_w)?),
        Method::Atom => ce.add(&atom_terms(z, h, &gate(w)?, mask, atom)?.regularizer(atom, step)?),
        Method::HingeL1 => ce.add(&hinge_lp(z, Norm::L1, reg.margin)?.scale(reg.lambda)?),
        Method::HingeL2 => ce.add(&hinge_lp(z, Norm::L2, reg.margin)?.scale(reg.lambda)?),
        Method::SimClr => {
            let (a, b) = views()?;
            ce.add(&crate::atom::nt_xent(&a, &b, reg.tau)?.scale(reg.lambda)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn slugs_round_trip_through_parse_and_serde() {
        for m in Method::ALL {
            assert_eq!(Method::parse(m.slug()).unwrap(), m);
            assert_eq!(serde_json::to_value(m).unwrap(), serde_json::json!(m.slug()));
        }
        assert!(Method::parse("nope").is_err());
    }
}
