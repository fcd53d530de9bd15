/* Kopilka's donation widget. One tag on an article page:
 *   <script src="https://support.example.org/widget.js" async
 *           data-lang="ru" data-currency="eur" data-target="#support"></script>
 * data-api         Kopilka's address (default: where this script came from)
 * data-lang        en or ru (default: the page's <html lang>)
 * data-currency    ISO code; data-country ISO country (default: Kopilka's default currency)
 * data-target      CSS selector to render into (default: right after this tag)
 * data-return-url  where the reader comes back after paying (default: this page)
 * data-count-view  "false" on pages that are not articles (the meter counts the rest)
 * Two rails when the offer names both: card (Stripe) and crypto (the newsroom's BTCPay Server:
 * one-off, or a supporter pass of 1/3/12 months, for oneself or as gift codes); "Have a pass
 * code?" redeems a code on this browser. Codes bought here are kept in sessionStorage only
 * until the reader comes back from paying, shown once, then forgotten.
 * After Stripe's page the reader comes back through Kopilka to this page with a clean URL (no
 * Stripe or contribution id for the page's other scripts to read); the widget asks Kopilka
 * how it went (GET /v1/checkout/outcome, a short-lived cookie of Kopilka's own).
 * It fires "kopilka:supporter" on document (detail: {supporter: true}, no claims) when the
 * reader turns out to be a supporter, and
 * marks the element it renders into with data-kopilka: loading, shown, hidden, thanks,
 * confirmed, reminded or ending (a pass near its end) (for a site's own CSS).
 * No dependencies, no build step; amounts are integers in minor units throughout. */
(() => {
  "use strict";
  const script = document.currentScript;
  if (!script) return;
  const data = script.dataset;
  const api = (data.api || new URL(script.src, location.href).origin).replace(/\/+$/, "");
  const pick = (data.lang || document.documentElement.lang || navigator.language || "en").slice(0, 2).toLowerCase();
  const lang = pick === "ru" ? "ru" : "en";

  const TEXT = {
    en: {
      heading: "Support us", lead: "Contribute today", close: "Close",
      often: "How often", once: "Once", month: "Monthly", year: "Annual",
      per: { once: "", month: "/month", year: "/year" },
      amount: "Amount", other: "Other amount",
      from: { month: "Support us monthly from just {a}.", year: "Support us annually from just {a}." },
      go: "Continue", working: "One moment…",
      goal: "This costs us {t} a month: help us fill the gap.", raised: "{c} of {t} this month",
      left: "{n} free articles left this month.", walled: "You have read all your free articles this month.",
      notNow: "Not now",
      later: "Not ready to support today?", remind: "Remind me later", email: "Email", on: "Remind me on",
      remindGo: "Remind me", reminded: "Thank you. We will remind you on {d}.",
      member: "Already a supporter?", signIn: "Sign in", send: "Send me a link",
      sent: "If you can sign in with that address, a link is on its way. It works for 15 minutes.",
      thanks: "Thank you for your support! Your contribution is being confirmed.",
      confirmed: "Thank you for your support!", cancelled: "No payment was made.",
      low: "The least we can accept is {a}.", high: "The most we can accept is {a}.",
      bad: "Enter an amount, like 5 or 5.50.", badEmail: "Enter a valid email address.",
      failed: "That did not work. Please try again.",
      human: "Please confirm you are human; your contribution then continues.",
      lowNow: "Right now the least we can accept is higher than usual. Please choose a larger amount.",
      blocked: "Payments from your network are paused for now. Please try again later.",
      payWith: "Pay with", card: "Card", crypto: "Crypto", pass: "Pass",
      months: { 1: "1 month", 3: "3 months", 12: "12 months" }, monthsN: "{n} months",
      passFor: "{m} — {a}", passHint: "A pass makes you a supporter for its months. Crypto payments do not repeat by themselves: nothing more is charged.",
      gift: "Give as codes (for someone else, or with no email)", howMany: "How many codes",
      receipt: "Email for a receipt (optional)",
      cryptoThanks: "Thank you! Your payment is being confirmed on the network; this can take a while.",
      codesHead: "Your pass codes. Copy them now: they are shown only once, and work once the payment is confirmed.",
      codesFirst: "Your pass codes. Copy them now, before you pay: they are shown here and once more after paying, never again. They work once the payment is confirmed.",
      toPay: "Continue to payment",
      haveCode: "Have a pass code?", code: "Pass code", useCode: "Use code",
      codeOk: "Thank you! Your pass is active until {d}.",
      codeUnknown: "That is not a valid pass code. Check it and try again.",
      codeUsed: "That code has already been used.", codeWait: "That code's payment is not confirmed yet. Try again later.",
      codeDead: "That code is no longer valid.", codeSlow: "Too many tries. Please wait a little and try again.",
      ends: "Your supporter pass ends in {n} days.", renew: "Renew",
    },
    ru: {
      heading: "Поддержите нас", lead: "Помогите сегодня", close: "Закрыть",
      often: "Как часто", once: "Разово", month: "Ежемесячно", year: "Ежегодно",
      per: { once: "", month: "/мес.", year: "/год" },
      amount: "Сумма", other: "Другая сумма",
      from: { month: "Поддержите нас ежемесячно — от {a}.", year: "Поддержите нас ежегодно — от {a}." },
      go: "Продолжить", working: "Минутку…",
      goal: "Наша работа стоит {t} в месяц: помогите закрыть разрыв.", raised: "{c} из {t} в этом месяце",
      left: "Бесплатных статей в этом месяце осталось: {n}.", walled: "Вы прочитали все бесплатные статьи этого месяца.",
      notNow: "Не сейчас",
      later: "Не готовы помочь сегодня?", remind: "Напомнить позже", email: "Эл. почта", on: "Напомнить",
      remindGo: "Напомнить", reminded: "Спасибо. Мы напомним {d}.",
      member: "Уже поддерживаете нас?", signIn: "Войти", send: "Прислать ссылку",
      sent: "Если с этим адресом можно войти, ссылка уже в пути. Она действует 15 минут.",
      thanks: "Спасибо за поддержку! Мы подтверждаем ваш платёж.",
      confirmed: "Спасибо за поддержку!", cancelled: "Платёж не состоялся.",
      low: "Минимальная сумма — {a}.", high: "Максимальная сумма — {a}.",
      bad: "Введите сумму, например 5 или 5,50.", badEmail: "Введите правильный адрес почты.",
      failed: "Не получилось. Попробуйте ещё раз.",
      human: "Подтвердите, что вы человек, — и платёж продолжится.",
      lowNow: "Сейчас минимальная сумма выше обычной. Пожалуйста, выберите сумму побольше.",
      blocked: "Платежи из вашей сети сейчас приостановлены. Попробуйте позже.",
      payWith: "Способ оплаты", card: "Карта", crypto: "Криптовалюта", pass: "Абонемент",
      months: { 1: "1 месяц", 3: "3 месяца", 12: "12 месяцев" }, monthsN: "{n} мес.",
      passFor: "{m} — {a}", passHint: "Абонемент делает вас нашим сторонником на его срок. Платежи в криптовалюте не повторяются сами: больше ничего не спишется.",
      gift: "Купить коды (в подарок или без почты)", howMany: "Сколько кодов",
      receipt: "Почта для квитанции (необязательно)",
      cryptoThanks: "Спасибо! Платёж подтверждается в сети, это может занять время.",
      codesHead: "Ваши коды абонемента. Скопируйте их сейчас: они показываются один раз и заработают, когда платёж подтвердится.",
      codesFirst: "Ваши коды абонемента. Скопируйте их сейчас, до оплаты: они показываются здесь и ещё раз после оплаты, больше никогда. Они заработают, когда платёж подтвердится.",
      toPay: "Перейти к оплате",
      haveCode: "Есть код абонемента?", code: "Код абонемента", useCode: "Применить код",
      codeOk: "Спасибо! Ваш абонемент действует до {d}.",
      codeUnknown: "Такого кода нет. Проверьте его и попробуйте ещё раз.",
      codeUsed: "Этот код уже использован.", codeWait: "Платёж за этот код ещё не подтверждён. Попробуйте позже.",
      codeDead: "Этот код больше не действует.", codeSlow: "Слишком много попыток. Подождите немного и попробуйте снова.",
      ends: "Ваш абонемент закончится через {n} дн.", renew: "Продлить",
    },
  };
  const T = TEXT[lang];
  const fill = (text, values) => text.replace(/\{(\w)\}/g, (_, k) => values[k]);

  // Money: integers in minor units; text only for display.
  const decimal = (minor, exp) => {
    const unit = 10 ** exp;
    const sign = minor < 0 ? "-" : "";
    const abs = Math.abs(minor);
    const major = (abs - (abs % unit)) / unit;
    return exp === 0 ? sign + major : sign + major + "." + String(abs % unit).padStart(exp, "0");
  };
  const money = (minor, currency, exp) => {
    const whole = minor % 10 ** exp === 0;
    return new Intl.NumberFormat(lang, {
      style: "currency", currency: currency.toUpperCase(),
      minimumFractionDigits: whole ? 0 : exp, maximumFractionDigits: exp,
    }).format(decimal(minor, exp));
  };
  // "5", "5.5", "5,50", "1 000" → minor units; null when it is not an amount.
  const toMinor = (text, exp) => {
    const match = /^(\d{1,9})(?:[.,](\d+))?$/.exec(text.replace(/[\s\u00a0]/g, ""));
    if (!match || (match[2] || "").length > exp) return null;
    const fraction = ((match[2] || "") + "0".repeat(exp)).slice(0, exp);
    return Number(match[1]) * 10 ** exp + Number(fraction || "0");
  };
  const isoDate = (days) => new Date(Date.now() + days * 86400000).toISOString().slice(0, 10);

  const call = async (method, path, body, headers) => {
    try {
      const response = await fetch(api + path, {
        method, credentials: "include",
        headers: body === undefined ? headers : { "content-type": "application/json", ...headers },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { ok: response.ok, status: response.status, body: await response.json().catch(() => null) };
    } catch (_) {
      return { ok: false, status: 0, body: null };
    }
  };
  const key = () => (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random().toString(16).slice(2));

  // The DOM, built from nodes (never from HTML strings).
  let seq = 0;
  const id = (name) => "kopilka-" + name + "-" + seq;
  const h = (tag, attrs, ...children) => {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === false || value == null) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    node.append(...children.filter((c) => c != null && c !== false));
    return node;
  };

  const STYLE = `
.kopilka{all:revert;box-sizing:border-box;font:16px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#111;background:#fff;border:2px solid #111;border-radius:8px;padding:20px;margin:24px 0;position:relative;max-width:40rem}
.kopilka *{box-sizing:border-box}
.kopilka h2{font-size:1.4rem;margin:0 0 8px}
.kopilka p{margin:8px 0}
.kopilka fieldset{border:0;margin:12px 0;padding:0;display:flex;flex-wrap:wrap;gap:8px}
.kopilka legend{font-weight:600;margin-bottom:6px;padding:0}
.kopilka .kopilka-choice{position:relative}
.kopilka .kopilka-choice input{position:absolute;opacity:0;inset:0;margin:0}
.kopilka .kopilka-choice span{display:inline-block;padding:8px 14px;border:2px solid #1d4ed8;border-radius:6px;color:#1d4ed8;background:#fff;cursor:pointer;min-width:44px;text-align:center}
.kopilka .kopilka-choice input:checked+span{background:#1d4ed8;color:#fff}
.kopilka .kopilka-choice input:focus-visible+span,.kopilka button:focus-visible,.kopilka input:focus-visible{outline:3px solid #b45309;outline-offset:2px}
.kopilka label.kopilka-field{display:block;margin:8px 0}
.kopilka input[type=text],.kopilka input[type=email],.kopilka input[type=date],.kopilka input[type=number]{font:inherit;padding:7px 10px;border:2px solid #555;border-radius:6px;color:#111;background:#fff;max-width:100%}
.kopilka button{font:inherit;cursor:pointer}
.kopilka .kopilka-primary{background:#1d4ed8;color:#fff;border:0;border-radius:6px;padding:10px 24px;font-weight:600}
.kopilka .kopilka-primary[disabled]{background:#555}
.kopilka .kopilka-link{background:none;border:0;padding:0;color:#1d4ed8;text-decoration:underline}
.kopilka .kopilka-close{position:absolute;top:8px;right:8px;background:none;border:0;font-size:1.6rem;line-height:1;padding:4px 10px;color:#111}
.kopilka progress{width:100%;height:10px;accent-color:#15803d}
.kopilka [role=alert]{color:#b91c1c;font-weight:600}
.kopilka [hidden]{display:none!important}
.kopilka.kopilka-wall{position:fixed;inset:auto 0 0 0;max-width:none;margin:0;border-radius:8px 8px 0 0;z-index:2147483000;box-shadow:0 -4px 24px rgba(0,0,0,.35);max-height:90vh;overflow:auto}
`;
  const style = () => {
    if (!document.getElementById("kopilka-style")) document.head.append(h("style", { id: "kopilka-style" }, STYLE));
  };

  const mount = () => {
    const target = data.target && document.querySelector(data.target);
    if (target) return target;
    const box = h("div", { class: "kopilka-host" });
    script.after(box);
    return box;
  };

  const returnUrl = () => {
    if (data.returnUrl) return data.returnUrl;
    const url = new URL(location.href);
    url.searchParams.delete("checkout");
    url.searchParams.delete("contribution");
    url.hash = "";
    return url.href;
  };

  const offerPath = (count) => {
    const query = new URLSearchParams();
    if (data.currency) query.set("currency", data.currency);
    if (data.country) query.set("country", data.country);
    if (count) query.set("view", "1");
    // For experiments that target pages and languages: the path only, never the query.
    query.set("path", location.pathname);
    query.set("lang", lang);
    return "/v1/offer" + (query.toString() ? "?" + query : "");
  };

  // The page learns that the reader supports it, nothing more (no id, expiry or plan).
  const supporter = () => document.dispatchEvent(new CustomEvent("kopilka:supporter", { detail: { supporter: true } }));

  // Sign in with an emailed link (a supporter then stops seeing asks on every device).
  const signIn = () => {
    seq += 1;
    const signStatus = h("p", { role: "status" });
    const signEmail = h("input", { type: "email", id: id("sign-email"), autocomplete: "email", required: true });
    const signForm = h("form", { class: "kopilka-signin", hidden: true, novalidate: true, onsubmit: async (event) => {
      event.preventDefault();
      if (!signEmail.value.includes("@")) { signStatus.textContent = T.badEmail; return; }
      signStatus.textContent = "";
      const answer = await call("POST", "/v1/sessions/magic-link", { email: signEmail.value.trim() });
      signStatus.textContent = answer.ok ? T.sent : answer.status === 422 ? T.badEmail : T.failed;
    } },
    h("label", { class: "kopilka-field", for: id("sign-email") }, T.email + " ", signEmail),
    h("button", { type: "submit", class: "kopilka-primary" }, T.send), signStatus);
    const member = h("button", { type: "button", class: "kopilka-link", "aria-expanded": "false", onclick: () => {
      signForm.hidden = !signForm.hidden;
      member.setAttribute("aria-expanded", String(!signForm.hidden));
      if (!signForm.hidden) signEmail.focus();
    } }, T.signIn);
    return [h("p", { class: "kopilka-member" }, T.member + " ", member), signForm];
  };

  // A pass code, redeemed on this browser: the supporter token's cookie, and the holder's.
  const redeem = (host) => {
    seq += 1;
    const status = h("p", { role: "status" });
    const input = h("input", { type: "text", id: id("code"), autocomplete: "off", spellcheck: "false", required: true });
    const form = h("form", { class: "kopilka-redeem", hidden: true, novalidate: true, onsubmit: async (event) => {
      event.preventDefault();
      if (!input.value.trim()) { status.textContent = T.codeUnknown; input.focus(); return; }
      const button = form.querySelector("button");
      if (button.disabled) return;
      button.disabled = true;
      const answer = await call("POST", "/v1/passes/redeem", { code: input.value });
      button.disabled = false;
      if (answer.ok && answer.body && answer.body.claims) {
        const until = new Intl.DateTimeFormat(lang, { dateStyle: "long" }).format(new Date(answer.body.claims.paid_through * 1000));
        host.replaceChildren(h("section", { class: "kopilka kopilka-thanks", lang }, h("p", { role: "status" }, fill(T.codeOk, { d: until }))));
        host.dataset.kopilka = "confirmed";
        supporter();
        return;
      }
      const code = answer.body && answer.body.error && answer.body.error.code;
      status.textContent = code === "unknown_code" ? T.codeUnknown : code === "code_already_redeemed" ? T.codeUsed
        : code === "code_not_yet_paid" ? T.codeWait : code === "code_revoked" || code === "code_expired" ? T.codeDead
        : answer.status === 429 ? T.codeSlow : T.failed;
    } },
    h("label", { class: "kopilka-field", for: id("code") }, T.code + " ", input),
    h("button", { type: "submit", class: "kopilka-primary" }, T.useCode), status);
    const open = h("button", { type: "button", class: "kopilka-link", "aria-expanded": "false", onclick: () => {
      form.hidden = !form.hidden;
      open.setAttribute("aria-expanded", String(!form.hidden));
      if (!form.hidden) input.focus();
    } }, T.haveCode);
    return [h("p", { class: "kopilka-have-code" }, open), form];
  };

  // After paying: thank, then (for a signed-in reader) wait for the webhook to make the
  // supporter token say so, and take the banner away.
  const thanks = async (host) => {
    const stash = (name) => {
      try { const value = sessionStorage.getItem(name); sessionStorage.removeItem(name); return value; } catch (_) { return null; }
    };
    const rail = stash("kopilka-rail");
    let codes = [];
    try { codes = JSON.parse(stash("kopilka-codes") || "[]"); } catch (_) { codes = []; }
    const note = h("p", { role: "status" }, rail === "crypto" ? T.cryptoThanks : T.thanks);
    const section = h("section", { class: "kopilka kopilka-thanks", lang }, note,
      codes.length ? h("div", { class: "kopilka-codes" }, h("p", null, T.codesHead),
        h("ul", null, ...codes.map((code) => h("li", null, h("code", null, code))))) : null);
    host.replaceChildren(section);
    host.dataset.kopilka = "thanks";
    for (let attempt = 0; attempt < 20; attempt++) {
      const answer = await call("GET", "/v1/entitlements");
      if (answer.status === 401 || answer.status === 0) {
        // Not signed in: no asks on this browser for a while (the banner's close), and a way
        // to sign in so that the token says supporter everywhere.
        await call("PUT", "/v1/banner", { closed: true });
        section.append(...signIn());
        return;
      }
      if (answer.ok && answer.body && answer.body.claims.supporter) {
        note.textContent = T.confirmed;
        host.dataset.kopilka = "confirmed";
        supporter();
        return;
      }
      await new Promise((done) => setTimeout(done, 1500));
    }
  };

  const render = (host, offer, outcome) => {
    seq += 1;
    const exp = offer.exponent;
    const fmt = (minor) => money(minor, offer.currency, exp);
    const rails = offer.rails && offer.rails.length ? offer.rails : ["card"];
    const passes = offer.passes || [];
    let rail = outcome === "renew" && rails.includes("crypto") ? "crypto" : rails[0];
    let interval = rail === "crypto" ? (outcome === "renew" && passes.length ? "pass" : "once") : offer.default_interval;
    let months = passes.length ? passes[passes.length - 1].months : null;
    let gift = false;
    // The terms of what is chosen: an interval's, or one pass length's.
    const current = () => interval === "pass"
      ? (passes.find((p) => p.months === months) || passes[0])
      : offer.intervals[interval];
    let amount = current().default_minor;
    const meter = offer.meter;
    const walled = meter && meter.wall !== "none";

    const error = h("p", { role: "alert", id: id("error") });
    const hint = h("p", { class: "kopilka-hint" });
    const amounts = h("fieldset", { class: "kopilka-amounts" });
    const other = h("input", { type: "text", inputmode: "decimal", autocomplete: "off", id: id("other"), "aria-describedby": id("error") });
    const submit = h("button", { type: "submit", class: "kopilka-primary" }, T.go);
    const intervals = h("fieldset", { class: "kopilka-intervals" });
    const receipt = h("input", { type: "email", id: id("receipt"), autocomplete: "email" });
    const receiptField = h("label", { class: "kopilka-field kopilka-receipt", for: id("receipt"), hidden: true }, T.receipt + " ", receipt);
    const count = h("input", { type: "number", id: id("count"), min: 1, max: 20, value: 1, inputmode: "numeric" });
    const countField = h("label", { class: "kopilka-field", for: id("count"), hidden: true }, T.howMany + " ", count);
    const giftBox = h("input", { type: "checkbox", id: id("gift"), onchange: () => { gift = giftBox.checked; countField.hidden = !gift; } });
    const giftField = h("p", { class: "kopilka-gift", hidden: true }, giftBox, " ", h("label", { for: id("gift") }, T.gift));

    const choice = (name, value, label, checked, onchange) => h("label", { class: "kopilka-choice", "data-kopilka": name + "-" + value },
      h("input", { type: "radio", name: id(name), value, checked, onchange }), h("span", null, label));

    const monthsText = (n) => T.months[n] || fill(T.monthsN, { n });
    const drawAmounts = () => {
      const terms = current();
      const pass = interval === "pass";
      const per = pass ? "" : T.per[interval];
      amounts.replaceChildren(
        h("legend", null, pass ? T.pass : T.amount),
        ...(pass
          ? passes.map((p) => choice("months", p.months, fill(T.passFor, { m: monthsText(p.months), a: fmt(p.default_minor) }), p.months === months && !other.value, () => {
            months = p.months; amount = p.default_minor; other.value = ""; error.textContent = ""; drawAmounts();
          }))
          : terms.presets.map((preset) => choice("amount", preset, fmt(preset) + per, preset === amount && !other.value, () => {
            amount = preset; other.value = ""; error.textContent = "";
          }))),
        // The input's own id: `seq` has moved on since it was made (the sign-in and code forms).
        h("label", { class: "kopilka-field", for: other.id }, T.other + (per ? " (" + per.slice(1) + ")" : "") + " ", other),
      );
      hint.textContent = pass ? T.passHint : interval === "once" ? "" : fill(T.from[interval], { a: fmt(terms.minimum_minor) });
      receiptField.hidden = rail !== "crypto";
      giftField.hidden = !pass;
      countField.hidden = !pass || !gift;
    };
    const drawIntervals = () => {
      const offered = rail === "crypto" ? ["once", ...(passes.length ? ["pass"] : [])]
        : (offer.show_intervals && offer.show_intervals.length ? offer.show_intervals : ["once", "month", "year"]);
      if (!offered.includes(interval)) { interval = offered[0]; amount = current().default_minor; }
      intervals.replaceChildren(h("legend", null, T.often),
        ...offered.map((value) => choice("interval", value, T[value], value === interval, () => {
          interval = value; amount = current().default_minor; other.value = ""; error.textContent = ""; drawAmounts();
        })));
    };
    const railChoice = rails.length > 1 ? h("fieldset", { class: "kopilka-rails" }, h("legend", null, T.payWith),
      ...rails.map((value) => choice("rail", value, T[value], value === rail, () => {
        rail = value; other.value = ""; error.textContent = ""; drawIntervals(); drawAmounts();
      }))) : null;
    other.addEventListener("input", () => {
      for (const radio of amounts.querySelectorAll("input[type=radio]")) radio.checked = false;
      error.textContent = "";
    });

    const chosen = () => {
      const terms = current();
      if (!other.value.trim()) return amount;
      const typed = toMinor(other.value, exp);
      if (typed === null) { error.textContent = T.bad; return null; }
      if (typed < terms.minimum_minor) { error.textContent = fill(T.low, { a: fmt(terms.minimum_minor) }); return null; }
      if (typed > terms.maximum_minor) { error.textContent = fill(T.high, { a: fmt(terms.maximum_minor) }); return null; }
      return typed;
    };

    // Under attack Kopilka asks for a human check (Turnstile or hCaptcha): its script is
    // loaded only then, rendered here, and its single-use token sent with the next try.
    const challengeBox = h("div", { class: "kopilka-challenge", hidden: true });
    let challengeToken = null;
    let challengeId = null;
    const loadChallenge = (info) => new Promise((resolve, reject) => {
      const name = info.provider === "hcaptcha" ? "hcaptcha" : "turnstile";
      if (window[name]) { resolve(window[name]); return; }
      let tag = document.querySelector("script[data-kopilka-challenge]");
      if (!tag) {
        tag = h("script", { src: info.script_url, async: true, "data-kopilka-challenge": name });
        document.head.append(tag);
      }
      tag.addEventListener("load", () => (window[name] ? resolve(window[name]) : reject(new Error(name))));
      tag.addEventListener("error", () => reject(new Error(name)));
    });
    const showChallenge = async (info) => {
      challengeBox.hidden = false;
      try {
        const widget = await loadChallenge(info);
        if (challengeId !== null) { widget.reset(challengeId); return; }
        challengeId = widget.render(challengeBox, { sitekey: info.site_key, callback: (token) => {
          challengeToken = token; error.textContent = ""; give.requestSubmit();
        } });
      } catch (_) {
        error.textContent = T.failed;
      }
    };

    const give = h("form", { class: "kopilka-give", novalidate: true, onsubmit: async (event) => {
      event.preventDefault();
      if (submit.disabled) return;
      const minor = chosen();
      if (minor === null) { other.focus(); return; }
      submit.disabled = true;
      submit.textContent = T.working;
      const token = challengeToken;
      challengeToken = null;
      const copies = interval === "pass" && gift ? Math.min(20, Math.max(1, Math.floor(Number(count.value) || 1))) : 1;
      const body = { interval: interval === "pass" ? "once" : interval, amount_minor: minor * copies, currency: offer.currency,
        return_url: returnUrl(), challenge_token: token || undefined };
      if (rail === "crypto") {
        body.rail = "crypto";
        if (receipt.value.trim()) body.email = receipt.value.trim();
        if (interval === "pass") { body.pass_months = months; if (gift) body.pass_codes = copies; }
      }
      const answer = await call("POST", "/v1/checkout", body, { "idempotency-key": key() });
      if (answer.ok && answer.body && answer.body.checkout_url) {
        const codes = answer.body.pass_codes || [];
        try {
          sessionStorage.setItem("kopilka-rail", rail);
          if (codes.length) sessionStorage.setItem("kopilka-codes", JSON.stringify(codes));
        } catch (_) { /* no storage: the codes are shown now, before paying */ }
        if (!codes.length) { location.assign(answer.body.checkout_url); return; }
        // Codes first: a buyer who pays and closes BTCPay's tab must still have them.
        const go = h("button", { type: "button", class: "kopilka-primary", onclick: () => location.assign(answer.body.checkout_url) }, T.toPay);
        give.replaceWith(h("div", { class: "kopilka-codes", role: "status" }, h("p", null, T.codesFirst),
          h("ul", null, ...codes.map((c) => h("li", null, h("code", null, c)))), go));
        go.focus();
        return;
      }
      submit.disabled = false;
      submit.textContent = T.go;
      const failure = (answer.body && answer.body.error) || {};
      const code = failure.code;
      const terms = current();
      if ((code === "challenge_required" || code === "challenge_failed") && failure.challenge) {
        error.textContent = T.human;
        showChallenge(failure.challenge);
        return;
      }
      error.textContent = code === "amount_below_minimum"
        ? (minor >= terms.minimum_minor ? T.lowNow : fill(T.low, { a: fmt(terms.minimum_minor) }))
        : code === "amount_above_maximum" ? fill(T.high, { a: fmt(terms.maximum_minor) })
        : code === "invalid_email" ? T.badEmail
        : code === "blocked" ? T.blocked : T.failed;
    } },
    railChoice, intervals, amounts, hint, giftField, countField, receiptField, submit, challengeBox, error);
    drawIntervals();
    drawAmounts();

    // Remind me later: an address and a date; the banner then sleeps until that day.
    const remindStatus = h("p", { role: "status" });
    const remindEmail = h("input", { type: "email", id: id("remind-email"), autocomplete: "email", required: true });
    const remindOn = h("input", { type: "date", id: id("remind-on"), value: isoDate(7), min: isoDate(1), max: isoDate(365), required: true });
    const remindForm = h("form", { class: "kopilka-remind", hidden: true, novalidate: true, onsubmit: async (event) => {
      event.preventDefault();
      if (!remindEmail.value.includes("@")) { remindStatus.textContent = T.badEmail; remindEmail.focus(); return; }
      const answer = await call("POST", "/v1/reminders", { email: remindEmail.value.trim(), remind_on: remindOn.value });
      if (!answer.ok) { remindStatus.textContent = answer.status === 422 ? T.badEmail : T.failed; return; }
      await call("PUT", "/v1/banner", { snoozed_until: remindOn.value + "T00:00:00Z" });
      const day = new Intl.DateTimeFormat(lang, { dateStyle: "long", timeZone: "UTC" }).format(new Date(remindOn.value + "T00:00:00Z"));
      host.replaceChildren(h("section", { class: "kopilka kopilka-reminded", lang }, h("p", { role: "status" }, fill(T.reminded, { d: day }))));
      host.dataset.kopilka = "reminded";
    } },
    h("label", { class: "kopilka-field", for: id("remind-email") }, T.email + " ", remindEmail),
    h("label", { class: "kopilka-field", for: id("remind-on") }, T.on + " ", remindOn),
    h("button", { type: "submit", class: "kopilka-primary" }, T.remindGo), remindStatus);
    const later = h("button", { type: "button", class: "kopilka-link", "aria-expanded": "false", onclick: () => {
      remindForm.hidden = !remindForm.hidden;
      later.setAttribute("aria-expanded", String(!remindForm.hidden));
      if (!remindForm.hidden) remindEmail.focus();
    } }, T.remind);

    const goal = offer.goal;
    const raised = goal.current_minor === null ? ""
      : fill(T.raised, { c: money(goal.current_minor, goal.currency, goal.exponent), t: money(goal.target_minor, goal.currency, goal.exponent) });
    const goalParts = goal.target_minor > 0 && offer.show_goal !== false ? [
      h("p", { id: id("goal") }, fill(T.goal, { t: money(goal.target_minor, goal.currency, goal.exponent) })),
      goal.current_minor === null ? null : h("progress", { max: goal.target_minor, value: Math.min(goal.current_minor, goal.target_minor), "aria-labelledby": id("goal"),
        "aria-valuetext": raised }),
      goal.current_minor === null ? null : h("p", { class: "kopilka-raised", "aria-hidden": "true" }, raised),
    ] : [];
    const metered = offer.meter_mode !== "asks_only" && meter;
    const banner = h("section", {
      class: "kopilka kopilka-banner" + (walled ? " kopilka-wall" : ""), lang, "aria-labelledby": id("heading"),
      role: walled ? "dialog" : null, "aria-modal": walled ? "true" : null,
    },
    walled && meter.wall === "hard" ? null : h("button", { type: "button", class: "kopilka-close", "aria-label": T.close, onclick: async () => {
      if (banner.classList.contains("kopilka-wall")) { banner.classList.remove("kopilka-wall"); banner.removeAttribute("role"); banner.removeAttribute("aria-modal"); return; }
      host.replaceChildren();
      host.dataset.kopilka = "hidden";
      await call("PUT", "/v1/banner", { closed: true });
    } }, "×"),
    h("h2", { id: id("heading") }, offer.copy ? offer.copy.headline : T.heading),
    metered ? h("p", { class: "kopilka-meter" }, walled ? T.walled : fill(T.left, { n: meter.remaining })) : null,
    ...goalParts,
    outcome === "cancelled" ? h("p", { role: "status" }, T.cancelled) : null,
    h("p", { class: "kopilka-lead" }, offer.copy ? offer.copy.body : T.lead),
    give,
    h("p", { class: "kopilka-later" }, T.later + " ", later), remindForm,
    ...signIn(), ...(passes.length ? redeem(host) : []));
    host.replaceChildren(banner);
    host.dataset.kopilka = "shown";
    if (walled) banner.querySelector("h2").setAttribute("tabindex", "-1");
  };

  const start = async () => {
    const host = mount();
    host.dataset.kopilka = "loading";
    // How a checkout this browser just came back from ended: Kopilka's cookie, not the URL.
    const back = await call("GET", "/v1/checkout/outcome");
    const outcome = back.ok && back.body ? back.body.outcome : null;
    if (outcome === "cancelled") {
      // Nothing was paid: what waited for the return is forgotten.
      try { sessionStorage.removeItem("kopilka-codes"); sessionStorage.removeItem("kopilka-rail"); } catch (_) { /* none */ }
    }
    style();
    if (outcome === "success") return thanks(host);
    let answer = await call("GET", offerPath(data.countView !== "false"));
    if (answer.ok && answer.body.renew) {
      await call("GET", "/v1/entitlements");
      answer = await call("GET", offerPath(false));
    }
    if (!answer.ok || !answer.body) { host.dataset.kopilka = "hidden"; return; }
    const offer = answer.body;
    if (offer.supporter) supporter();
    if (!offer.show && offer.pass_ends_at) {
      // A pass holder near the end of their pass: a word, and a way to renew.
      const days = Math.max(1, Math.ceil((offer.pass_ends_at * 1000 - Date.now()) / 86400000));
      host.replaceChildren(h("section", { class: "kopilka kopilka-ending", lang },
        h("p", { role: "status" }, fill(T.ends, { n: days }), " ",
          h("button", { type: "button", class: "kopilka-link", onclick: () => render(host, offer, "renew") }, T.renew))));
      host.dataset.kopilka = "ending";
      return;
    }
    if (!offer.show) { host.replaceChildren(); host.dataset.kopilka = "hidden"; return; }
    render(host, offer, outcome);
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
