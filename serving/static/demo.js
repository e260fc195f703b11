// The recstack demo storefront: product grid, "Recommended for you" shelf, consent banner and the event tracker.
// Plain JS, same origin only: the collector's visitor cookie (HttpOnly) identifies this browser, so no id is kept here.
// Nothing is queued, sent to /events or requested from /pixel.gif until the visitor has agreed to analytics.
(() => {
  "use strict";

  const CONSENT_COOKIE = "rs_consent"; // set by POST /consent: "analytics=1&personalisation=0"
  const SHELF_SIZE = 8;
  const BATCH = 100; // events per request: well under the server's 64 KB body limit and sendBeacon's 64 KB quota
  const FLUSH_EVERY_MS = 5000;
  // The collector requires an item_id on scroll events; page-level ones name the page instead of a product.
  const PAGE_ITEM = `page:${location.pathname}`;

  const $ = (id) => document.getElementById(id);
  const catalogue = new Map(); // item_id -> {item_id, title, categories}
  const queue = [];
  let consent = readConsent(); // null: no choice made yet
  let flushing = Promise.resolve();
  let shelfRequest = 0;
  let opener = null; // the card that opened the detail panel (focus returns to it)
  let detail = null; // {itemId, since}: the product shown, since when (visible time only)
  let maxScroll = 0;
  let pageReported = false;

  // -- consent --------------------------------------------------------------------------------------------------

  function readCookie(name) {
    for (const part of document.cookie.split(";")) {
      const at = part.indexOf("=");
      if (at > 0 && part.slice(0, at).trim() === name) {
        try {
          return decodeURIComponent(part.slice(at + 1).trim());
        } catch (error) {
          return part.slice(at + 1).trim();
        }
      }
    }
    return null;
  }

  function readConsent() {
    const raw = readCookie(CONSENT_COOKIE);
    if (raw === null) return null;
    const params = new URLSearchParams(raw.replace(/^"|"$/g, ""));
    return { analytics: params.get("analytics") === "1", personalisation: params.get("personalisation") === "1" };
  }

  function purposesOf(purposes) {
    return { analytics: Boolean(purposes.analytics), personalisation: Boolean(purposes.personalisation) };
  }

  function showBanner(withChoices) {
    const current = consent || { analytics: false, personalisation: false };
    $("consent-analytics").checked = current.analytics;
    $("consent-personalisation").checked = current.personalisation;
    setChoicesOpen(withChoices);
    $("consent-status").textContent = "";
    $("consent").hidden = false;
    $("consent-accept").focus();
  }

  function setChoicesOpen(open) {
    $("consent-choose").hidden = !open;
    $("consent-toggle").setAttribute("aria-expanded", String(open));
  }

  async function choose(purposes) {
    const status = $("consent-status");
    status.textContent = "Saving your choice…";
    let answer;
    try {
      const response = await fetch("/consent", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ purposes }),
      });
      if (!response.ok) throw new Error(`the server answered ${response.status}`);
      answer = await response.json();
    } catch (error) {
      status.textContent = `Your choice could not be saved (${error.message}). Please try again.`;
      return;
    }
    consent = purposesOf((answer && answer.purposes) || purposes);
    if (!consent.analytics) queue.length = 0; // withdrawn: what was waiting is never sent
    $("consent").hidden = true;
    status.textContent = "";
    document.body.dataset.consent = consent.analytics ? "analytics" : "none";
    refreshShelf();
  }

  // What the server has recorded for this visitor. Also the first collector response of a new visitor, which sets
  // the visitor cookie that /recommend reads. A recorded choice without the banner's cookie is taken as made.
  async function syncConsent() {
    try {
      const response = await fetch("/consent", { credentials: "same-origin" });
      if (!response.ok) return;
      const state = await response.json();
      if (consent === null && state.recorded && state.purposes) {
        consent = purposesOf(state.purposes);
        $("consent").hidden = true;
        document.body.dataset.consent = consent.analytics ? "analytics" : "none";
      }
    } catch (error) {
      // no collector answering: the page still shows products; the banner stays until a choice is saved
    }
  }

  // -- the tracker --------------------------------------------------------------------------------------------------

  function newId() {
    if (crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16)); // randomUUID needs a secure context (plain http)
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function track(eventType, fields) {
    if (!consent || !consent.analytics) return;
    const event = {
      event_id: newId(), // idempotency key: a batch sent twice (retry after a lost answer) is stored once
      event_type: eventType,
      timestamp: Date.now() / 1000,
      tz_offset_min: -new Date().getTimezoneOffset(),
      ...fields,
    };
    if (document.referrer) event.referrer = document.referrer.slice(0, 2048); // reduced to its host by the server
    queue.push(event);
  }

  // Awaitable flush (fetch): after a click the shelf is refreshed only once the click is stored.
  function flush() {
    flushing = flushing.then(async () => {
      while (queue.length) {
        const events = queue.splice(0, BATCH);
        let response;
        try {
          response = await postEvents(events);
        } catch (error) {
          queue.unshift(...events); // network error: kept for the next flush
          return;
        }
        if (response.status === 429 || response.status >= 500) {
          queue.unshift(...events); // busy or down: kept for the next flush
          return;
        }
        if (!response.ok) console.warn("recstack demo: events refused", response.status, await response.text());
      }
    });
    return flushing;
  }

  function postEvents(events) {
    return fetch("/events", {
      method: "POST",
      credentials: "same-origin",
      keepalive: true,
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ events }),
    });
  }

  // Leaving or hiding the page: sendBeacon is delivered after the page is gone. Chromium accepts an
  // application/json Blob same-origin; where a browser refuses it (returns false or throws), fetch keepalive.
  function flushOnExit() {
    while (queue.length) {
      const events = queue.splice(0, BATCH);
      const body = JSON.stringify({ events });
      let sent = false;
      try {
        sent = navigator.sendBeacon("/events", new Blob([body], { type: "application/json" }));
      } catch (error) {
        sent = false;
      }
      if (!sent) postEvents(events).catch(() => {});
    }
  }

  function pixel(itemId) {
    if (!consent || !consent.analytics) return;
    const tz = -new Date().getTimezoneOffset();
    const image = new Image(1, 1);
    image.alt = "";
    image.src = `/pixel.gif?e=view&i=${encodeURIComponent(itemId)}&tz=${tz}`;
  }

  function endDwell() {
    if (detail && detail.since !== null) {
      const ms = Math.min(Math.round(performance.now() - detail.since), 86400000); // the collector's bound: a day
      track("dwell", { item_id: detail.itemId, value: ms });
      detail.since = null;
    }
  }

  function measureScroll() {
    const root = document.documentElement;
    const height = Math.max(root.scrollHeight, 1);
    maxScroll = Math.max(maxScroll, Math.min(1, (window.scrollY + window.innerHeight) / height));
  }

  function reportPage() {
    if (pageReported) return;
    pageReported = true;
    measureScroll();
    track("scroll", { item_id: PAGE_ITEM, value: Math.round(maxScroll * 100) / 100 });
  }

  // -- products, detail panel and shelf ----------------------------------------------------------------------------

  function swatchClass(item) {
    const name = (item.categories && item.categories[0]) || item.item_id;
    let hash = 0;
    for (const ch of name) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
    return `swatch tone-${hash % 8}`;
  }

  function initials(title) {
    const words = title.split(/\s+/).filter(Boolean);
    return words.slice(0, 2).map((w) => w[0].toUpperCase()).join("") || "?";
  }

  function card(item) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "card";
    button.dataset.itemId = item.item_id;
    const swatch = document.createElement("span");
    swatch.className = swatchClass(item);
    swatch.setAttribute("aria-hidden", "true");
    swatch.textContent = initials(item.title || item.item_id);
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = item.title || item.item_id;
    const cats = document.createElement("span");
    cats.className = "cats";
    cats.textContent = (item.categories || []).join(" · ");
    button.append(swatch, title, cats);
    button.addEventListener("click", () => select(item.item_id, button));
    const li = document.createElement("li");
    li.append(button);
    return li;
  }

  async function select(itemId, from) {
    openDetail(itemId, from);
    track("click", { item_id: itemId });
    pixel(itemId);
    await flush();
    await refreshShelf();
  }

  function openDetail(itemId, from) {
    endDwell();
    const item = catalogue.get(itemId) || { item_id: itemId, title: itemId, categories: [] };
    detail = { itemId, since: document.visibilityState === "visible" ? performance.now() : null };
    opener = from;
    $("detail-title").textContent = item.title;
    $("detail-cats").textContent = (item.categories || []).join(" · ");
    $("detail-id").textContent = item.item_id;
    $("detail-swatch").className = swatchClass(item);
    $("detail-swatch").textContent = initials(item.title);
    $("detail-status").textContent = "";
    $("detail").hidden = false;
    $("detail-title").focus();
  }

  function closeDetail() {
    if (!detail) return;
    endDwell();
    detail = null;
    $("detail").hidden = true;
    if (opener && document.contains(opener)) opener.focus();
    opener = null;
  }

  async function addToCart() {
    if (!detail) return;
    track("add_to_cart", { item_id: detail.itemId });
    $("detail-status").textContent = "Added to your cart.";
    await flush();
    await refreshShelf();
  }

  async function loadCatalogue() {
    const grid = $("grid");
    const status = $("grid-status");
    try {
      const response = await fetch("/demo/catalogue.json", { credentials: "same-origin" });
      if (!response.ok) throw new Error(`the server answered ${response.status}`);
      const data = await response.json();
      for (const item of data.items) catalogue.set(item.item_id, item);
      grid.replaceChildren(...data.items.map((item) => card(item)));
      status.textContent = `${data.items.length} products`;
    } catch (error) {
      status.textContent = `The products could not be loaded (${error.message}). Reload the page to try again.`;
    } finally {
      grid.setAttribute("aria-busy", "false");
    }
  }

  async function refreshShelf() {
    const ticket = ++shelfRequest; // only the newest answer is drawn
    const shelf = $("shelf");
    const source = $("shelf-source");
    shelf.setAttribute("aria-busy", "true");
    try {
      const response = await fetch("/recommend", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ k: SHELF_SIZE }),
      });
      if (!response.ok) throw new Error(`the server answered ${response.status}`);
      const data = await response.json();
      if (ticket !== shelfRequest) return;
      shelf.replaceChildren(
        ...data.items.map((rec) => {
          const known = catalogue.get(rec.item_id);
          return card({ item_id: rec.item_id, title: rec.title, categories: known ? known.categories : [] });
        }),
      );
      source.textContent = data.personalised
        ? "Picked for you from what you looked at."
        : "Popular right now. Allow personalisation to get picks based on what you look at.";
    } catch (error) {
      if (ticket !== shelfRequest) return;
      source.textContent = `Recommendations are unavailable right now (${error.message}).`;
    } finally {
      if (ticket === shelfRequest) {
        shelf.setAttribute("aria-busy", "false");
        document.body.dataset.shelfVersion = String(ticket); // tests wait on this
      }
    }
  }

  // -- wiring ----------------------------------------------------------------------------------------------------

  function start() {
    $("consent-accept").addEventListener("click", () => choose({ analytics: true, personalisation: true }));
    $("consent-reject").addEventListener("click", () => choose({ analytics: false, personalisation: false }));
    $("consent-toggle").addEventListener("click", () => setChoicesOpen($("consent-choose").hidden));
    $("consent-choose").addEventListener("submit", (event) => {
      event.preventDefault();
      choose({ analytics: $("consent-analytics").checked, personalisation: $("consent-personalisation").checked });
    });
    $("open-consent").addEventListener("click", () => showBanner(true));
    $("detail-close").addEventListener("click", closeDetail);
    $("detail-cart").addEventListener("click", addToCart);
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape") closeDetail();
    });

    let scheduled = false;
    window.addEventListener(
      "scroll",
      () => {
        if (scheduled) return;
        scheduled = true;
        requestAnimationFrame(() => {
          scheduled = false;
          measureScroll();
        });
      },
      { passive: true },
    );
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "hidden") {
        endDwell(); // only visible time counts as dwell
        flushOnExit();
      } else if (detail) {
        detail.since = performance.now();
      }
    });
    window.addEventListener("pagehide", () => {
      endDwell();
      reportPage();
      flushOnExit();
    });
    window.setInterval(() => {
      if (queue.length) flush();
    }, FLUSH_EVERY_MS);

    document.body.dataset.consent = consent === null ? "unset" : consent.analytics ? "analytics" : "none";
    if (consent === null) showBanner(false);
    measureScroll();
    Promise.all([loadCatalogue(), syncConsent()]).then(refreshShelf);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
