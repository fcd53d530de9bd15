//! The per-view decision: show the banner or not, and what the meter says. Pure: it takes
//! what the request carried (a verified supporter token, the asks-hidden-until instant, the
//! meter's view) and touches nothing else.

use serde::Serialize;

use crate::{MeterView, SupporterClaims};

/// What one page view shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Show the banner.
    pub show: bool,
    /// Why: `supporter` (hidden), `hidden` (closed or snoozed), or `ask`.
    pub reason: &'static str,
    /// Whether the reader's token says supporter.
    pub supporter: bool,
    /// The meter (absent for supporters, who bypass it).
    pub meter: Option<MeterView>,
}

/// Decides one view at `now` (Unix seconds).
#[must_use]
pub fn decide(
    supporter: Option<&SupporterClaims>,
    hide_asks_until: Option<i64>,
    meter: Option<MeterView>,
    now: i64,
) -> Decision {
    if supporter.is_some_and(|c| c.supporter) {
        return Decision {
            show: false,
            reason: "supporter",
            supporter: true,
            meter: None,
        };
    }
    let hidden = hide_asks_until.is_some_and(|until| until > now);
    Decision {
        show: !hidden,
        reason: if hidden { "hidden" } else { "ask" },
        supporter: false,
        meter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(supporter: bool) -> SupporterClaims {
        SupporterClaims {
            sub: "r".into(),
            supporter,
            tier: None,
            interval: None,
            paid_through: None,
            hide_asks_until: None,
            iss: "i".into(),
            aud: "a".into(),
            iat: 0,
            exp: 10,
        }
    }

    #[test]
    fn supporters_bypass_everything_and_snoozes_hide_only_the_ask() {
        let wall = Some(MeterView {
            remaining: 0,
            wall: "hard",
        });
        let d = decide(Some(&claims(true)), None, wall, 5);
        assert_eq!((d.show, d.reason, d.meter), (false, "supporter", None));
        let d = decide(Some(&claims(false)), Some(6), wall, 5);
        assert_eq!(
            (d.show, d.reason, d.meter),
            (false, "hidden", wall),
            "a snooze hides the ask, not the wall"
        );
        let d = decide(None, Some(5), None, 5);
        assert_eq!(
            (d.show, d.reason),
            (true, "ask"),
            "a snooze that ended shows again"
        );
    }
}
