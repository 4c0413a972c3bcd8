//! The endpoint table, shared by the router and the observation layer.

/// Every endpoint, once: the router is built from this table and the observation layer names
/// requests by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Validate,
    Mutate,
    Convert,
    Healthz,
    Readyz,
    Metrics,
}

impl Endpoint {
    pub const ALL: [Self; 6] = [
        Self::Validate,
        Self::Mutate,
        Self::Convert,
        Self::Healthz,
        Self::Readyz,
        Self::Metrics,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Self::Validate => "/validate",
            Self::Mutate => "/mutate",
            Self::Convert => "/convert",
            Self::Healthz => "/healthz",
            Self::Readyz => "/readyz",
            Self::Metrics => "/metrics",
        }
    }

    /// The label of review endpoints in metrics; probes are not counted.
    pub fn review_label(self) -> Option<&'static str> {
        match self {
            Self::Validate => Some("validate"),
            Self::Mutate => Some("mutate"),
            Self::Convert => Some("convert"),
            Self::Healthz | Self::Readyz | Self::Metrics => None,
        }
    }

    pub fn from_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.path() == path)
    }
}
