//! Data residency: which of a route's backends a request may use. Pure.
//!
//! Three restrictions may apply, and a provider must satisfy every one:
//! the AIGateway's `allowedRegions`, the AIRoute's, and the caller's
//! principal label [`PRINCIPAL_LABEL`] (regions separated by `|`). Each is
//! a list of region names or globs (`eu-*`). A provider without a
//! `dataRegion` satisfies none: where it processes data is unknown, so a
//! restricted request never goes there. Unrestricted requests skip all of
//! this.

use tollgate_config::snapshot::{GatewayConfig, Principal, Route, glob_matches};

use super::{Answer, Failure};
use crate::error::ApiError;

/// The principal label that restricts a caller's regions.
pub const PRINCIPAL_LABEL: &str = "allowed-regions";

/// The region restrictions of one request.
#[derive(Debug)]
pub struct Residency<'a> {
    gateway: &'a [String],
    route: &'a [String],
    principal: Vec<&'a str>,
}

impl<'a> Residency<'a> {
    /// The restrictions on a request, or `None` when nothing restricts it.
    pub fn of(
        gateway: &'a [String],
        route: &'a [String],
        principal: Option<&'a Principal>,
    ) -> Option<Self> {
        let principal: Vec<&str> = principal
            .and_then(|p| p.labels.get(PRINCIPAL_LABEL))
            .map(|regions| {
                regions
                    .split('|')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        (!gateway.is_empty() || !route.is_empty() || !principal.is_empty()).then_some(Self {
            gateway,
            route,
            principal,
        })
    }

    /// Whether a provider in `region` satisfies every restriction.
    pub fn permits(&self, region: Option<&str>) -> bool {
        let Some(region) = region else {
            return false;
        };
        within(self.gateway, region)
            && within(self.route, region)
            && within(&self.principal, region)
    }

    /// The restrictions, for an error message.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (whose, list) in [
            ("gateway", self.gateway.join(", ")),
            ("route", self.route.join(", ")),
        ] {
            if !list.is_empty() {
                parts.push(format!("{whose}: {list}"));
            }
        }
        if !self.principal.is_empty() {
            parts.push(format!("caller: {}", self.principal.join(", ")));
        }
        parts.join("; ")
    }
}

/// True when `globs` is empty (no restriction) or one matches `region`.
fn within<S: AsRef<str>>(globs: &[S], region: &str) -> bool {
    globs.is_empty() || globs.iter().any(|glob| glob_matches(glob.as_ref(), region))
}

/// Drops from `order` the backends of `route` a restricted request may not
/// use. `Ok(Some(restrictions))` when some were held back (for
/// [`held_back`]), `Ok(None)` when none were or nothing restricts the
/// request, and a 503 when none is left.
pub fn restrict(
    config: &GatewayConfig,
    route: &Route,
    principal: Option<&Principal>,
    order: &mut Vec<usize>,
) -> Result<Option<String>, ApiError> {
    let Some(residency) = Residency::of(&config.allowed_regions, &route.allowed_regions, principal)
    else {
        return Ok(None);
    };
    let before = order.len();
    order.retain(|&index| {
        let provider = &config.providers[route.backends[index].provider];
        residency.permits(provider.data_region.as_deref())
    });
    if order.is_empty() && before > 0 {
        return Err(ApiError::unavailable(format!(
            "no backend of route {} processes data in a region this request may use ({})",
            route.name,
            residency.describe()
        )));
    }
    Ok((order.len() < before).then(|| residency.describe()))
}

/// When every backend a request may use failed and others were held back
/// by residency: a 503 that says so (the failure's own words kept), since
/// answering from another region is exactly what must not happen. Other
/// answers pass as they are.
pub fn held_back(
    answer: Result<Answer, Failure>,
    route: &str,
    restrictions: &str,
) -> Result<Answer, Failure> {
    let why = match &answer {
        Err(Failure::Gateway(error))
            if error.status.is_server_error() || error.status.as_u16() == 429 =>
        {
            error.message.clone()
        }
        Ok(Answer::Full(_, status)) if *status >= 500 => format!("the provider answered {status}"),
        _ => return answer,
    };
    Err(ApiError::unavailable(format!(
        "every backend of route {route} in the regions this request may use failed, and no other region may answer ({restrictions}): {why}"
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(regions: &str) -> Principal {
        let mut principal = Principal::default();
        principal
            .labels
            .insert(PRINCIPAL_LABEL.into(), regions.into());
        principal
    }

    #[test]
    fn nothing_restricts_an_unrestricted_request() {
        assert!(Residency::of(&[], &[], None).is_none());
        assert!(Residency::of(&[], &[], Some(&Principal::default())).is_none());
    }

    #[test]
    fn every_restriction_must_hold_and_unknown_regions_never_do() {
        let gateway = vec!["eu-*".to_string(), "us-east-1".to_string()];
        let route = vec!["eu-west-1".to_string(), "us-east-1".to_string()];
        let caller = principal("eu-west-1 | eu-central-1");
        let residency = Residency::of(&gateway, &route, Some(&caller)).unwrap();
        assert!(residency.permits(Some("eu-west-1")));
        assert!(!residency.permits(Some("eu-central-1")), "not the route's");
        assert!(!residency.permits(Some("us-east-1")), "not the caller's");
        assert!(!residency.permits(None), "unknown region");
        assert_eq!(
            residency.describe(),
            "gateway: eu-*, us-east-1; route: eu-west-1, us-east-1; caller: eu-west-1, eu-central-1"
        );
        let only_route = Residency::of(&[], &route, None).unwrap();
        assert!(only_route.permits(Some("us-east-1")));
        assert!(!only_route.permits(Some("us-west-2")));
    }
}
