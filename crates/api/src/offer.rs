//! `GET /v1/offer`: the per-view decision and what the banner offers this reader — show or
//! hide (a verified supporter token, the closed/snoozed state, the meter), presets, limits
//! and the default per interval in their currency, and the funding goal's progress. It
//! serves every page view, so it reads settings, the goal cache, the keyring and signed
//! cookies only: no SQL per request.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use kopilka_config::{IntervalOffer, OfferSettings, PassesSettings, Settings};
use kopilka_domain::{Currency, Interval, Locale};
use kopilka_experiments::spec::VariantSpec;
use kopilka_paywall::MeterMode;
use kopilka_recurring::GoalFigure;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::identity::Jar;
use crate::{AppError, AppState, ErrorBody};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(offer))
}

/// Which offer: an explicit currency, or the reader's country.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct OfferQuery {
    /// ISO 4217 code; must be offered.
    currency: Option<String>,
    /// ISO 3166 alpha-2 code, e.g. `DE`; picks the country's currency.
    country: Option<String>,
    /// `1` on an article view: counts it on the meter (the cookie comes back updated).
    #[serde(default)]
    view: Option<u8>,
    /// The page's path (for experiments that target pages), e.g. `/politics/2027/budget`.
    #[serde(default)]
    path: Option<String>,
    /// The reader's language, `en` or `ru` (for experiments that target languages).
    #[serde(default)]
    lang: Option<String>,
}

/// The experiment and variant a view was served.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServedExperiment {
    /// The experiment's name.
    pub name: String,
    /// The variant's key; null in the holdback (no ask).
    pub variant: Option<String>,
}

/// The anonymous reader's meter cookie (signed, host-only).
pub(crate) const METER_COOKIE: &str = "__Host-kopilka_meter";

/// Presets and limits for one interval (minor units).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IntervalTerms {
    /// The buttons.
    pub presets: Vec<i64>,
    /// Selected first.
    pub default_minor: i64,
    /// The least accepted.
    pub minimum_minor: i64,
    /// The most accepted.
    pub maximum_minor: i64,
}

/// The three intervals.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Intervals {
    /// One-off.
    pub once: IntervalTerms,
    /// Monthly.
    pub month: IntervalTerms,
    /// Annual.
    pub year: IntervalTerms,
}

/// One pass length's terms (minor units, for one pass): its months of the monthly terms.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PassTerms {
    /// How long.
    pub months: u8,
    /// Selected first: the monthly default, times the months.
    pub default_minor: i64,
    /// The least accepted: the monthly minimum, times the months.
    pub minimum_minor: i64,
    /// The most accepted.
    pub maximum_minor: i64,
}

/// The goal's progress; `current_minor` is null until first computed.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Goal {
    /// The goal's currency.
    pub currency: String,
    /// Its decimal places.
    pub exponent: u32,
    /// The monthly target.
    pub target_minor: i64,
    /// Monthly recurring revenue plus this month's one-off gifts.
    pub current_minor: Option<i64>,
    /// When `current_minor` was computed (unix seconds).
    pub computed_at: Option<i64>,
}

/// The meter after this view.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MeterState {
    /// Free articles left this calendar month.
    pub remaining: u32,
    /// `none`, `dismissible` or `hard`.
    pub wall: String,
}

/// The banner's offer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Offer {
    /// Whether to show the banner.
    pub show: bool,
    /// Why: `supporter`, `hidden` (closed or snoozed) or `ask`.
    pub reason: String,
    /// Whether a valid supporter token says so.
    pub supporter: bool,
    /// The request carries a session but no valid supporter token: fetch
    /// `/v1/entitlements` once (it sets the token's cookie) and ask again.
    pub renew: bool,
    /// The meter (null for supporters).
    pub meter: Option<MeterState>,
    /// The ask experiment this view belongs to, if any (pass it to checkout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<ServedExperiment>,
    /// The ways to pay offered to this reader, the one to preselect first: `card`, `crypto`
    /// (see `[rails]`).
    pub rails: Vec<String>,
    /// When the supporter token is a pass's that ends within `passes.ending_notice_days`:
    /// its end (unix seconds), for "your pass ends in N days". Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_ends_at: Option<i64>,
    /// The currency of every amount here but the goal's.
    pub currency: String,
    /// Its decimal places: amounts are `minor / 10^exponent` major units.
    pub exponent: u32,
    /// The meter's mode: `asks_only`, `metered` or `hard`.
    pub meter_mode: String,
    /// The interval selected first.
    pub default_interval: String,
    /// The intervals to show, in order (an experiment's variant may show fewer).
    pub show_intervals: Vec<String>,
    /// Whether to show the goal line (an experiment's variant may hide it).
    pub show_goal: bool,
    /// An experiment variant's words for the banner in the reader's language (`lang`);
    /// absent when the widget's own words apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<OfferCopy>,
    /// Presets and limits per interval.
    pub intervals: Intervals,
    /// Supporter passes (the crypto rail's months paid ahead), per length; null when no
    /// BTCPay store is configured.
    pub passes: Option<Vec<PassTerms>>,
    /// The funding goal.
    pub goal: Goal,
}

/// What depends on the reader: written per request, in front of the pre-rendered rest.
#[derive(Serialize)]
struct ReaderPart<'a> {
    show: bool,
    reason: &'static str,
    supporter: bool,
    renew: bool,
    meter: Option<MeterState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    experiment: Option<Served<'a>>,
    rails: &'static [&'static str],
    #[serde(skip_serializing_if = "Option::is_none")]
    pass_ends_at: Option<i64>,
}

/// The experiment a view was served: what the answer says, and (skipped) what picks its tail.
#[derive(Serialize, Clone, Copy)]
struct Served<'a> {
    name: &'a str,
    variant: Option<&'a str>,
    /// The experiment's index among the running ones.
    #[serde(skip)]
    index: Option<usize>,
    /// The variant's index in its spec.
    #[serde(skip)]
    variant_index: Option<usize>,
    #[serde(skip)]
    spec: Option<&'a VariantSpec>,
    #[serde(skip)]
    locale: Locale,
}

/// What does not depend on the reader: the same for every view in one currency until the
/// goal's figure changes.
#[derive(Serialize)]
struct SharedPart<'a> {
    currency: String,
    exponent: u32,
    meter_mode: &'static str,
    default_interval: String,
    show_intervals: Vec<&'static str>,
    show_goal: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    copy: Option<&'a kopilka_experiments::spec::Copy>,
    intervals: Intervals,
    passes: Option<Vec<PassTerms>>,
    goal: Goal,
}

/// One interval's terms, with a variant's presets and default over the offer's: a variant
/// that sets presets but no default keeps the offer's default if it is among them, else its
/// middle preset.
fn terms(
    offer: &IntervalOffer,
    interval: Interval,
    currency: Currency,
    variant: Option<&VariantSpec>,
) -> IntervalTerms {
    let presets = variant
        .and_then(|v| v.presets.get(&currency))
        .and_then(|p| p.get(interval));
    let default = variant
        .and_then(|v| v.default_minor.get(&currency))
        .and_then(|d| d.get(interval))
        .copied();
    let default_minor = match (default, presets) {
        (Some(default), _) => default,
        (None, Some(presets)) if !presets.contains(&offer.default_minor) => presets
            .get(presets.len() / 2)
            .copied()
            .unwrap_or(offer.default_minor),
        _ => offer.default_minor,
    };
    IntervalTerms {
        presets: presets.unwrap_or(&offer.presets).clone(),
        default_minor,
        minimum_minor: offer.minimum_minor,
        maximum_minor: offer.maximum_minor,
    }
}

/// Which tail: a currency's, or a currency's under one experiment variant (by its index
/// among the running experiments of [`Rendered::generation`] and the reader's language).
type TailKey = (Currency, u32);

fn tail_key(currency: Currency, variant: Option<(usize, usize, Locale)>) -> TailKey {
    let code = variant.map_or(0, |(experiment, variant, locale)| {
        let at = experiment * kopilka_experiments::spec::MAX_VARIANTS + variant;
        let at = u32::try_from(at).unwrap_or(u32::MAX / 4);
        1 + at * 2 + u32::from(locale == Locale::Ru)
    });
    (currency, code)
}

/// An experiment variant's banner words.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OfferCopy {
    /// The heading.
    pub headline: String,
    /// The lead under it.
    pub body: String,
}

/// The reader-independent halves of the offer's body, serialized once per currency and goal
/// figure (the offer serves every page view), and the meter's mode parsed once.
#[derive(Clone)]
pub struct OfferBodies {
    mode: MeterMode,
    /// Read on every view without a lock; replaced whole when a tail is added.
    rendered: Arc<arc_swap::ArcSwap<Rendered>>,
}

/// The pre-rendered tails (each a JSON object's members without the opening brace) and the
/// goal figure they show.
#[derive(Default, Clone)]
struct Rendered {
    /// The figure's amount and time (two refreshes may fall in one second).
    goal: Option<(i64, i64)>,
    /// The running experiments' generation the variant tails were rendered for.
    generation: u64,
    tails: BTreeMap<TailKey, Arc<str>>,
}

impl std::fmt::Debug for OfferBodies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfferBodies")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl OfferBodies {
    /// Bodies for `settings` (nothing rendered until first asked).
    #[must_use]
    pub fn new(settings: &Settings) -> Self {
        let mode = match settings.paywall.meter_mode.as_str() {
            "metered" => MeterMode::Metered,
            "hard" => MeterMode::Hard,
            _ => MeterMode::AsksOnly,
        };
        Self {
            mode,
            rendered: Arc::default(),
        }
    }

    /// Hands `write` the tail for `currency` (under `variant`, the experiment's variant the
    /// view was served, with the running experiments' `generation`) under the goal's current
    /// `figure` (rendered now if the figure or the experiments changed since), borrowed: no
    /// count is touched on the hot path.
    #[allow(clippy::too_many_arguments)]
    fn with_tail<R>(
        &self,
        settings: &OfferSettings,
        passes: Option<&PassesSettings>,
        currency: Currency,
        figure: Option<&GoalFigure>,
        generation: u64,
        variant: Option<Served<'_>>,
        write: impl FnOnce(&str) -> R,
    ) -> R {
        let goal = figure.map(|f| (f.current_minor, f.computed_at));
        let key = tail_key(
            currency,
            variant.and_then(|v| Some((v.index?, v.variant_index?, v.locale))),
        );
        {
            let rendered = self.rendered.load();
            if rendered.goal == goal
                && rendered.generation == generation
                && let Some(tail) = rendered.tails.get(&key)
            {
                return write(tail);
            }
        }
        let mode = match self.mode {
            MeterMode::AsksOnly => "asks_only",
            MeterMode::Metered => "metered",
            MeterMode::Hard => "hard",
        };
        let tail = render_tail(
            settings,
            passes,
            mode,
            currency,
            figure,
            variant.and_then(|v| Some((v.spec?, v.locale))),
        );
        // Two views may render at once; either result is the same.
        self.rendered.rcu(|current| {
            let mut next = if current.goal == goal && current.generation == generation {
                Rendered::clone(current)
            } else {
                Rendered {
                    goal,
                    generation,
                    tails: BTreeMap::new(),
                }
            };
            next.tails.insert(key, Arc::clone(&tail));
            next
        });
        write(&tail)
    }
}

/// An anonymous reader's offer in the default currency, rendered once: what the benchmark
/// baseline (`GET /_baseline`) answers, so the two differ in work, not in size.
pub(crate) fn constant_body(settings: &Settings) -> Vec<u8> {
    let head = ReaderPart {
        show: true,
        reason: "baseline",
        supporter: false,
        renew: false,
        meter: None,
        experiment: None,
        rails: &["card", "crypto"],
        pass_ends_at: None,
    };
    let tail = render_tail(
        &settings.offer,
        Some(&settings.passes),
        "asks_only",
        settings.offer.default_currency,
        None,
        None,
    );
    offer_body(&head, &tail).unwrap_or_default()
}

/// One answer: the reader's part, then the shared tail, as one JSON object.
fn offer_body(head: &ReaderPart, tail: &str) -> Result<Vec<u8>, serde_json::Error> {
    let mut body = Vec::with_capacity(128 + tail.len());
    serde_json::to_writer(&mut body, head)?;
    body.pop();
    body.push(b',');
    body.extend_from_slice(tail.as_bytes());
    Ok(body)
}

fn render_tail(
    settings: &OfferSettings,
    passes: Option<&PassesSettings>,
    meter_mode: &'static str,
    currency: Currency,
    figure: Option<&GoalFigure>,
    variant: Option<(&VariantSpec, Locale)>,
) -> Arc<str> {
    let spec = variant.map(|(spec, _)| spec);
    let show: Vec<Interval> = [Interval::Once, Interval::Month, Interval::Year]
        .into_iter()
        .filter(|i| {
            spec.and_then(|v| v.intervals.as_ref())
                .is_none_or(|shown| shown.contains(i))
        })
        .collect();
    let shared = settings
        .currencies
        .get(&currency)
        .map(|terms_for| SharedPart {
            currency: currency.stripe_code(),
            exponent: currency.exponent(),
            meter_mode,
            default_interval: {
                let wanted = spec
                    .and_then(|v| v.default_interval)
                    .unwrap_or(terms_for.default_interval);
                if show.contains(&wanted) {
                    wanted
                } else {
                    show.first().copied().unwrap_or(wanted)
                }
            }
            .as_str()
            .to_owned(),
            show_intervals: show.iter().map(|i| i.as_str()).collect(),
            show_goal: spec.and_then(|v| v.goal_line).unwrap_or(true),
            copy: variant.and_then(|(v, locale)| v.copy.get(locale)),
            intervals: Intervals {
                once: terms(
                    terms_for.interval(Interval::Once),
                    Interval::Once,
                    currency,
                    spec,
                ),
                month: terms(
                    terms_for.interval(Interval::Month),
                    Interval::Month,
                    currency,
                    spec,
                ),
                year: terms(
                    terms_for.interval(Interval::Year),
                    Interval::Year,
                    currency,
                    spec,
                ),
            },
            passes: passes.map(|passes| {
                let month = terms_for.interval(Interval::Month);
                passes
                    .months
                    .iter()
                    .map(|&months| {
                        let times = i64::from(months);
                        PassTerms {
                            months,
                            default_minor: passes.preset(currency, months, month.default_minor),
                            minimum_minor: month.minimum_minor.saturating_mul(times),
                            maximum_minor: month.maximum_minor.saturating_mul(times),
                        }
                    })
                    .collect()
            }),
            goal: Goal {
                currency: settings.goal.currency.stripe_code(),
                exponent: settings.goal.currency.exponent(),
                target_minor: settings.goal.target_minor,
                current_minor: figure.map(|f| f.current_minor),
                computed_at: figure.map(|f| f.computed_at),
            },
        });
    let json = serde_json::to_string(&shared).unwrap_or_default();
    Arc::from(json.strip_prefix('{').unwrap_or("}"))
}

/// The banner's offer for this reader.
#[utoipa::path(get, path = "/v1/offer", tag = "contributions", params(OfferQuery),
    responses(
        (status = 200, description = "The offer", body = Offer),
        (status = 401, description = "The bearer supporter token is forged, expired or not for us (a bad cookie counts as no token)", body = ErrorBody),
        (status = 422, description = "Unknown or not offered currency", body = ErrorBody)
    ))]
async fn offer(
    State(state): State<AppState>,
    Query(query): Query<OfferQuery>,
    // The whole request, not `HeaderMap`: that extractor copies every header (this is the
    // hottest route; the copy cost 10 % of its throughput against the bare baseline).
    request: axum::extract::Request,
) -> Result<Response, AppError> {
    let headers = request.headers();
    let settings = &state.settings.offer;
    let requested = match query.currency.as_deref() {
        None | Some("") => None,
        Some(code) => Some(
            code.parse::<Currency>()
                .map_err(|e| AppError::Unprocessable {
                    code: "unknown_currency",
                    message: e.to_string(),
                })?,
        ),
    };
    let currency = settings
        .currency_for(requested, query.country.as_deref())
        .filter(|c| settings.currencies.contains_key(c))
        .ok_or_else(|| AppError::Unprocessable {
            code: "currency_not_offered",
            message: "that currency is not offered".into(),
        })?;

    let now = time::OffsetDateTime::now_utc();
    // Every cookie the view reads, parsed once.
    let jar = Jar::parse(headers);
    let ViewDecision {
        decision,
        renew,
        meter_cookie,
        pass_ends_at,
        subject,
    } = decide_view(&state, headers, &jar, query.view == Some(1), now)?;
    // Only an ask can be experimented on; with none running this costs one atomic load. A
    // view that asks for `renew` is asked again at once: the second answer is the one served.
    let live = state.experiments.load();
    let mut visitor_cookie = None;
    let mut served = None;
    let mut show = decision.show;
    let mut reason = decision.reason;
    if show && !renew && !live.is_empty() {
        let locale = query
            .lang
            .as_deref()
            .and_then(|l| l.parse::<Locale>().ok())
            .unwrap_or_default();
        let chosen = live.iter().enumerate().find(|(_, e)| {
            e.in_schedule(now)
                && e.spec.targeting.matches(
                    currency,
                    query.country.as_deref(),
                    query.path.as_deref(),
                    locale,
                )
        });
        if let Some((index, experiment)) = chosen {
            let known = crate::visitor::Visitor::from_jar(&state, &jar);
            let mut visitor = known.unwrap_or_else(crate::visitor::Visitor::new);
            // Sticky: a visitor keeps the variant they were served while the bandit's shares
            // move. Otherwise a signed-in reader is assigned by their token's subject (every
            // device agrees), anyone else by the cookie's random id.
            let assignment = visitor
                .served
                .filter(|(id, _)| *id == experiment.id)
                .and_then(|(_, slot)| crate::visitor::assignment_of(experiment, slot))
                .unwrap_or_else(|| {
                    experiment.assign(&subject.clone().unwrap_or_else(|| visitor.key()))
                });
            let served_now = Some((experiment.id, crate::visitor::slot_of(assignment)));
            let today = crate::visitor::day_of(now);
            // One view per visitor and day (and per change of experiment): a replayed request
            // does not count again. A signed-in reader without the cookie is counted from the
            // next view, once the cookie is back: a request without cookies cannot pile
            // views onto a variant it chose.
            let count = match known {
                Some(known) => known.counted_day != today || known.served != served_now,
                None => subject.is_none(),
            };
            if count {
                experiment.tally.view(assignment);
                visitor.counted_day = today;
            }
            visitor.served = served_now;
            if known != Some(visitor) {
                visitor_cookie = Some(visitor.cookie(&state));
            }
            let mut view = Served {
                name: &experiment.name,
                variant: None,
                index: Some(index),
                variant_index: None,
                spec: None,
                locale,
            };
            match assignment {
                kopilka_experiments::Assignment::Holdback => {
                    show = false;
                    reason = "holdback";
                }
                kopilka_experiments::Assignment::Variant(at) => {
                    let spec = experiment.spec.variants.get(at);
                    view.variant = spec.map(|v| v.key.as_str());
                    view.variant_index = Some(at);
                    view.spec = spec;
                }
            }
            served = Some(view);
        }
    }
    let head = ReaderPart {
        show,
        reason,
        supporter: decision.supporter,
        renew,
        meter: decision.meter.map(|m| MeterState {
            remaining: m.remaining,
            wall: m.wall.to_owned(),
        }),
        experiment: served,
        rails: state.settings.rails.for_country(
            query.country.as_deref(),
            state.stripe.is_some(),
            state.btcpay.is_some(),
        ),
        pass_ends_at,
    };
    let passes = state.btcpay.is_some().then_some(&state.settings.passes);
    let body = state
        .offers
        .with_tail(
            settings,
            passes,
            currency,
            state.goal.get().as_ref(),
            live.generation,
            served,
            |tail| offer_body(&head, tail),
        )
        .map_err(AppError::internal)?;
    let mut response = (
        [
            (header::CONTENT_TYPE, "application/json"),
            // It depends on cookies and may set one: never stored by a shared cache.
            (header::CACHE_CONTROL, "private, no-store"),
        ],
        body,
    )
        .into_response();
    for value in [meter_cookie, visitor_cookie].into_iter().flatten() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// The supporter token a request carries: a JWT as the bearer token (`true`), else the
/// cookie (`false`).
fn supporter_token<'a>(headers: &'a HeaderMap, jar: &Jar<'a>) -> Option<(&'a str, bool)> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| t.matches('.').count() == 2)
        .map(|t| (t, true))
        .or_else(|| jar.supporter.map(|t| (t, false)))
}

/// What [`decide_view`] decided.
struct ViewDecision {
    decision: kopilka_paywall::Decision,
    /// A session without a valid supporter token: ask for one and come back.
    renew: bool,
    /// The meter's new cookie when the view was counted.
    meter_cookie: Option<HeaderValue>,
    /// The end of the reader's pass when it is near.
    pass_ends_at: Option<i64>,
    /// The supporter token's subject (a signed-in reader's stable id), if any.
    subject: Option<String>,
}

/// Decides this view from the request's token and cookies alone; returns the meter's new
/// cookie when the view was counted, and the end of the reader's pass when it is near.
///
/// # Errors
/// 401 `invalid_token` when a bearer supporter token fails verification (forged, expired,
/// another audience or issuer): a caller that sends one (an edge function, an app) must
/// learn it is refused. A bad cookie is the browser's leftover and counts as no token, so the
/// page still gets its answer; so does a token under a key this instance has not loaded.
fn decide_view(
    state: &AppState,
    headers: &HeaderMap,
    jar: &Jar<'_>,
    count: bool,
    now: time::OffsetDateTime,
) -> Result<ViewDecision, AppError> {
    let unix = now.unix_timestamp();
    let claims = match supporter_token(headers, jar) {
        None => None,
        Some((token, bearer)) => match state.keyring.get().verify(token, unix) {
            // An erased reader's token, refused like a forged one.
            Ok(claims) if state.revoked.contains(&claims.sub) => {
                if bearer {
                    return Err(AppError::Unauthorized {
                        code: "invalid_token",
                        message: "the supporter token is not valid here (revoked); get a new \
                                  one from GET /v1/entitlements"
                            .into(),
                    });
                }
                None
            }
            Ok(claims) => Some(claims),
            // A key this instance has not loaded yet (a rotation minutes old, or the keys not
            // read since start-up) says nothing against the token: no token, not a 401 that
            // would send the caller for a new token signed with the same key.
            Err(kopilka_paywall::TokenError::UnknownKey) => None,
            Err(_) if bearer => {
                return Err(AppError::Unauthorized {
                    code: "invalid_token",
                    message: "the supporter token is not valid here (forged, expired or for \
                              another site); get a new one from GET /v1/entitlements"
                        .into(),
                });
            }
            Err(_) => None,
        },
    };
    // Only the session cookie's presence: checking it would take a query.
    let renew = claims.is_none() && jar.session.is_some();
    let hide_until = match &claims {
        Some(claims) => claims.hide_asks_until,
        None => jar
            .banner
            .and_then(|c| {
                kopilka_accounts::banner::BannerState::from_cookie(&state.accounts.keys, c)
            })
            .and_then(|banner| banner.hides_asks_until())
            .map(time::OffsetDateTime::unix_timestamp),
    };
    let paywall = &state.settings.paywall;
    let secret = paywall.secret_bytes();
    let mode = state.offers.mode;
    let meter = kopilka_paywall::Meter::from_cookie(secret, jar.meter, now);
    let (counted, view) = if count {
        meter.view(mode, paywall.free_articles)
    } else {
        (meter, meter.peek(mode, paywall.free_articles))
    };
    let decision = kopilka_paywall::decide(claims.as_ref(), hide_until, Some(view), unix);
    let set_cookie = (count && !decision.supporter).then(|| {
        crate::identity::host_cookie(
            METER_COOKIE,
            &counted.to_cookie(secret),
            now + time::Duration::days(40),
        )
    });
    let notice = i64::from(state.settings.passes.ending_notice_days) * 86_400;
    let pass_ends_at = claims
        .as_ref()
        .filter(|claims| claims.tier.as_deref() == Some("pass"))
        .and_then(|claims| claims.paid_through)
        .filter(|end| *end > unix && *end - unix <= notice);
    Ok(ViewDecision {
        decision,
        renew,
        meter_cookie: set_cookie,
        pass_ends_at,
        subject: claims.map(|claims| claims.sub),
    })
}
