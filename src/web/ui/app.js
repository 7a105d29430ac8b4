// cml-web's page: a dashboard of containers with live state (Server-Sent Events), figures polled
// from the API, a PIN dialog, a terminal (xterm.js over a WebSocket), the GuestOS and device
// pages. No framework and no build step: every element is made with `h()` and filled with
// textContent, never innerHTML, so nothing the daemon or a user sends is parsed as markup.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

/** Makes an element: h("button", {class: "x", onclick: f}, "text", child…). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// ---------------------------------------------------------------------------------------------
// API access

const state = {
  csrf: null,
  allowed: null, // null: not known yet (everything shown); else a Set of action names
  device: null,
  containers: new Map(), // uuid -> {view, card, samples: [{t, cpu, mem, pids}]}
  events: null,
  poll: null,
};

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET" && method !== "HEAD") opts.headers["X-CSRF-Token"] = state.csrf || "";
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  if (r.status === 204) return null;
  const type = r.headers.get("content-type") || "";
  const data = type.includes("json") ? await r.json().catch(() => ({})) : await r.text();
  if (!r.ok) {
    if (r.status === 401 && path !== "/api/login") showLogin();
    const msg = (data && data.error) || (typeof data === "string" && data) || r.statusText;
    throw new ApiError(r.status, msg);
  }
  return data;
}

const allowed = (action) => state.allowed === null || state.allowed.has(action);

/** Hides what the daemon does not allow now (elements with data-needs="action"). */
function applyAllowed(root = document) {
  for (const el of $$("[data-needs]", root)) el.hidden = !allowed(el.dataset.needs);
}

async function loadDevice() {
  try {
    state.device = await api("GET", "/api/device");
    state.allowed = new Set(state.device.allowed || []);
  } catch (e) {
    if (e.status === 401) throw e;
    state.device = null;
    state.allowed = null;
  }
  applyAllowed();
}

// ---------------------------------------------------------------------------------------------
// Login, views, navigation

function showOnly(view) {
  for (const v of $$(".view")) v.hidden = v.id !== `view-${view}`;
  for (const a of $$("nav a")) a.classList.toggle("active", a.dataset.view === view);
}

function showLogin() {
  stopLive();
  state.csrf = null;
  $("#top").hidden = true;
  for (const d of $$("dialog")) if (d.open) d.close();
  showOnly("login");
  $("#login-password").focus();
}

async function afterLogin() {
  $("#top").hidden = false;
  await loadDevice();
  startLive();
  route();
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#login-error").textContent = "";
  $("#login-submit").disabled = true;
  try {
    const r = await api("POST", "/api/login", { password: $("#login-password").value });
    $("#login-password").value = "";
    state.csrf = r.csrf_token;
    await afterLogin();
  } catch (e) {
    $("#login-error").textContent = e.message;
  } finally {
    $("#login-submit").disabled = false;
  }
});

$("#logout").addEventListener("click", async () => {
  try {
    await api("POST", "/api/logout");
  } catch (_) {
    // Logged out either way.
  }
  location.hash = "";
  showLogin();
});

function route() {
  if (!state.csrf) return showLogin();
  const view = (location.hash.replace(/^#\//, "") || "containers").split("/")[0];
  if (view === "guestos") {
    showOnly("guestos");
    loadGuestos();
  } else if (view === "device") {
    showOnly("device");
    loadDevicePage();
  } else {
    showOnly("containers");
    refreshContainers();
  }
}
window.addEventListener("hashchange", route);

// ---------------------------------------------------------------------------------------------
// Live state: SSE for state changes, a poll for the figures

function startLive() {
  stopLive();
  const es = new EventSource("/api/events");
  state.events = es;
  es.onopen = () => $("#live").classList.add("on");
  es.onerror = () => $("#live").classList.remove("on");
  es.onmessage = (m) => {
    let ev;
    try {
      ev = JSON.parse(m.data);
    } catch (_) {
      return;
    }
    const c = state.containers.get(ev.uuid);
    if (c) {
      c.view.state = ev.state;
      if (ev.state !== "RUNNING" && ev.state !== "FROZEN") c.view.uptime = 0;
      renderCard(c);
    }
    // The figures and anything else that changed (uptime, pid, a new container).
    refreshContainers();
  };
  state.poll = setInterval(() => {
    if (!document.hidden && !$("#view-containers").hidden) refreshContainers();
  }, 2000);
}

function stopLive() {
  if (state.events) state.events.close();
  state.events = null;
  clearInterval(state.poll);
  state.poll = null;
  $("#live").classList.remove("on");
}

// ---------------------------------------------------------------------------------------------
// Containers

const SAMPLES = 60;

let refreshing = null;
async function refreshContainers() {
  if (refreshing) return refreshing;
  refreshing = (async () => {
    try {
      const { containers } = await api("GET", "/api/containers");
      $("#containers-error").textContent = "";
      const seen = new Set();
      const now = Date.now() / 1000;
      for (const view of containers) {
        seen.add(view.uuid);
        let c = state.containers.get(view.uuid);
        if (!c) {
          c = { view, samples: [], card: null, fetched: now };
          state.containers.set(view.uuid, c);
        }
        c.view = view;
        c.fetched = now;
        if (view.state === "RUNNING" || view.state === "FROZEN") {
          c.samples.push({ t: now, cpu: view.cpu_seconds, mem: view.memory_bytes, pids: view.pids });
          if (c.samples.length > SAMPLES) c.samples.shift();
        } else {
          c.samples = [];
        }
        renderCard(c);
      }
      for (const [uuid, c] of state.containers) {
        if (!seen.has(uuid)) {
          c.card && c.card.remove();
          state.containers.delete(uuid);
        }
      }
    } catch (e) {
      if (e.status !== 401) $("#containers-error").textContent = e.message;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

/** The container's colour (config `color`, 0xRRGGBBAA) as CSS, or a neutral grey. */
function cssColor(color) {
  if (color === undefined || color === null) return "#8a8f98";
  const rgb = (color >>> 8).toString(16).padStart(6, "0");
  return `#${rgb}`;
}

function fmtDuration(s) {
  s = Math.max(0, Math.floor(s));
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60), ss = s % 60;
  if (d) return `${d}d ${hh}h ${mm}m`;
  if (hh) return `${hh}h ${mm}m ${ss}s`;
  if (mm) return `${mm}m ${ss}s`;
  return `${ss}s`;
}

function fmtBytes(n) {
  if (n === undefined || n === null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** CPU use in % of one core between consecutive samples. */
function cpuSeries(samples) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1], b = samples[i];
    if (a.cpu == null || b.cpu == null || b.t <= a.t) continue;
    out.push(Math.max(0, ((b.cpu - a.cpu) / (b.t - a.t)) * 100));
  }
  return out;
}

/** A small SVG line chart of `values` (newest right). */
function sparkline(values, label) {
  const W = 120, H = 28;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "spark");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const vals = values.filter((v) => v !== undefined && v !== null);
  if (vals.length > 1) {
    const max = Math.max(...vals, 1e-9), min = Math.min(...vals, 0);
    const span = max - min || 1;
    const pts = vals.map((v, i) => {
      const x = (i / (SAMPLES - 1)) * W + (W - ((vals.length - 1) / (SAMPLES - 1)) * W);
      const y = H - 2 - ((v - min) / span) * (H - 4);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", pts.join(" "));
    svg.append(line);
  }
  return svg;
}

const ACTIONS = [
  // [action, label, shown in states]
  ["start", "Start", ["STOPPED"]],
  ["stop", "Stop", ["RUNNING", "FROZEN", "STARTING", "BOOTING", "SETUP"]],
  ["freeze", "Freeze", ["RUNNING"]],
  ["unfreeze", "Unfreeze", ["FROZEN"]],
  ["run", "Terminal", ["RUNNING", "SETUP"]],
  ["console", "Console", ["RUNNING", "BOOTING", "SETUP"]],
  ["logs", "Logs", null],
  ["config", "Config", null],
  ["change_pin", "Change PIN", null],
  ["wipe", "Wipe…", ["STOPPED"]],
  ["remove", "Remove…", ["STOPPED"]],
];

/** Draws or updates a container's card. The card and its buttons stay the same elements while
 * the state and the allowed actions do not change, so a poll never swallows a click. */
function renderCard(c) {
  const v = c.view;
  const running = v.state === "RUNNING" || v.state === "FROZEN";
  const uptime = running ? v.uptime + (Date.now() / 1000 - c.fetched) : 0;
  if (!c.card) {
    c.parts = {
      swatch: h("div", { class: "swatch" }),
      name: h("h3", {}),
      state: h("span", { class: "state" }),
      meta: h("div", { class: "meta" }),
      figures: h("div", { class: "figures" }),
      actions: h("div", { class: "actions" }),
      error: h("p", { class: "error", role: "alert" }),
    };
    const p = c.parts;
    c.card = h("article", { class: "container" }, p.swatch,
      h("div", { class: "body" }, h("div", { class: "title" }, p.name, p.state), p.meta, p.figures, p.actions, p.error));
    $("#containers").append(c.card);
  }
  const p = c.parts;
  c.card.className = `container state-${v.state}`;
  c.card.dataset.name = v.name;
  c.card.dataset.uuid = v.uuid;
  p.swatch.style.background = cssColor(v.color);
  p.name.textContent = v.name;
  p.state.textContent = v.state;
  p.state.dataset.state = v.state;
  p.meta.replaceChildren(
    h("span", {}, "GuestOS ", h("b", {}, v.guestos || "–")),
    h("span", {}, "uptime ", h("b", { class: "uptime" }, running ? fmtDuration(uptime) : "–")),
    v.token_type && v.token_type !== "NONE" ? h("span", {}, "token ", h("b", {}, v.token_type)) : "",
    v.restart_count ? h("span", {}, "restarts ", h("b", {}, v.restart_count)) : "",
    v.update_pending ? h("span", { class: "pending" }, "new config at next start") : "");
  const cpu = cpuSeries(c.samples);
  p.figures.hidden = !running;
  p.figures.replaceChildren(...(running ? [
    h("div", { class: "figure" }, h("span", { class: "k" }, "memory"),
      h("span", { class: "v", dataset: { figure: "memory" } }, fmtBytes(v.memory_bytes)),
      sparkline(c.samples.map((s) => s.mem), "memory")),
    h("div", { class: "figure" }, h("span", { class: "k" }, "CPU"),
      h("span", { class: "v", dataset: { figure: "cpu" } },
        cpu.length ? `${cpu[cpu.length - 1].toFixed(1)} %` : v.cpu_seconds != null ? `${v.cpu_seconds.toFixed(2)} s` : "–"),
      sparkline(cpu, "CPU")),
    h("div", { class: "figure" }, h("span", { class: "k" }, "pids"),
      h("span", { class: "v", dataset: { figure: "pids" } }, v.pids ?? "–"),
      sparkline(c.samples.map((s) => s.pids), "pids")),
  ] : []));
  const shown = ACTIONS.filter(([a, , states]) => allowed(a) && (!states || states.includes(v.state)))
    .filter(([a]) => a !== "change_pin" || v.token_type === "SOFT");
  const key = shown.map(([a]) => a).join(",");
  if (p.actions.dataset.key !== key) {
    p.actions.dataset.key = key;
    p.actions.replaceChildren(...shown.map(([a, label]) =>
      h("button", { type: "button", dataset: { action: a }, onclick: () => act(c, a) }, label)));
  }
  p.error.textContent = c.error || "";
}

// Uptime ticks between polls.
setInterval(() => {
  for (const c of state.containers.values()) {
    const el = c.card && $(".uptime", c.card);
    if (el && (c.view.state === "RUNNING" || c.view.state === "FROZEN")) {
      el.textContent = fmtDuration(c.view.uptime + (Date.now() / 1000 - c.fetched));
    }
  }
}, 1000);

function setCardError(c, msg) {
  c.error = msg;
  renderCard(c);
}

async function act(c, action) {
  const v = c.view;
  const path = `/api/containers/${encodeURIComponent(v.uuid)}`;
  setCardError(c, "");
  try {
    switch (action) {
      case "start":
      case "stop":
        if (v.token_type === "SOFT") {
          await askPin(`${action === "start" ? "Start" : "Stop"} ${v.name}`, false, (pin) =>
            api("POST", `${path}/${action}`, { pin }));
        } else {
          await api("POST", `${path}/${action}`);
        }
        break;
      case "freeze":
      case "unfreeze":
        await api("POST", `${path}/${action}`);
        break;
      case "change_pin":
        await askPin(`Change the PIN of ${v.name}`, true, (pin, new_pin) =>
          api("POST", `${path}/change_pin`, { pin, new_pin }));
        break;
      case "run":
        openTerminal(v, "run");
        return;
      case "console":
        openTerminal(v, "console");
        return;
      case "logs":
        showText(`Logs of ${v.name}`, await api("GET", `${path}/logs?tail=500`));
        return;
      case "config": {
        const r = await api("GET", `${path}/config`);
        showText(`Config of ${v.name}`, r.config, allowed("update_config") ? v : null);
        return;
      }
      case "wipe":
        await confirmAction(`Wipe ${v.name}?`,
          "Its data and key are deleted; its config, name and UUID stay.",
          () => api("POST", `${path}/wipe`));
        break;
      case "remove":
        await confirmAction(`Remove ${v.name}?`, "The container and all its data are deleted.",
          () => api("DELETE", path));
        break;
    }
  } catch (e) {
    if (e.status !== 401 && e.message !== "cancelled") setCardError(c, e.message);
  }
  refreshContainers();
}

/** Asks for a PIN (and a new one); `submit` is retried until it succeeds or the user cancels.
 * The daemon's message is shown on a wrong PIN. The PIN lives only in the input field. */
function askPin(title, withNew, submit) {
  const dlg = $("#pin-dialog");
  $("#pin-title").textContent = title;
  $("#pin-error").textContent = "";
  $("#pin-input").value = "";
  $("#pin-new").value = "";
  $(".new-pin", dlg).hidden = !withNew;
  dlg.showModal();
  $("#pin-input").focus();
  return new Promise((resolve, reject) => {
    const done = () => {
      $("#pin-form").removeEventListener("submit", onSubmit);
      $("#pin-cancel").removeEventListener("click", onCancel);
      $("#pin-input").value = "";
      $("#pin-new").value = "";
      dlg.close();
    };
    const onCancel = () => {
      done();
      reject(new Error("cancelled"));
    };
    const onSubmit = async (ev) => {
      ev.preventDefault();
      $("#pin-ok").disabled = true;
      $("#pin-error").textContent = "";
      try {
        const r = await submit($("#pin-input").value, $("#pin-new").value);
        done();
        resolve(r);
      } catch (e) {
        $("#pin-error").textContent = e.message;
        $("#pin-input").select();
      } finally {
        $("#pin-ok").disabled = false;
      }
    };
    $("#pin-form").addEventListener("submit", onSubmit);
    $("#pin-cancel").addEventListener("click", onCancel);
  });
}

/** Asks for confirmation, then runs `f`, showing its error in the dialog. */
function confirmAction(title, text, f) {
  const dlg = $("#confirm-dialog");
  $("#confirm-title").textContent = title;
  $("#confirm-text").textContent = text;
  $("#confirm-error").textContent = "";
  dlg.showModal();
  return new Promise((resolve, reject) => {
    const form = $("form", dlg);
    const done = () => {
      form.removeEventListener("submit", onSubmit);
      $("#confirm-cancel").removeEventListener("click", onCancel);
      dlg.close();
    };
    const onCancel = () => {
      done();
      reject(new Error("cancelled"));
    };
    const onSubmit = async (ev) => {
      ev.preventDefault();
      try {
        const r = await f();
        done();
        resolve(r);
      } catch (e) {
        $("#confirm-error").textContent = e.message;
      }
    };
    form.addEventListener("submit", onSubmit);
    $("#confirm-cancel").addEventListener("click", onCancel);
  });
}

function showText(title, text, updatable) {
  $("#text-title").textContent = title;
  $("#text-body").textContent = text || "(empty)";
  const form = $("#config-update");
  form.hidden = !updatable;
  if (updatable) {
    form.config.value = text || "";
    $(".result", form).textContent = "";
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      try {
        const body = await configBody(form, form.config.value);
        await api("PUT", `/api/containers/${encodeURIComponent(updatable.uuid)}/config`, body);
        $(".result", form).textContent = "Stored; applied at the next start.";
        refreshContainers();
      } catch (e) {
        $(".result", form).textContent = e.message;
      }
    };
  }
  $("#text-dialog").showModal();
}
$("#text-close").addEventListener("click", () => $("#text-dialog").close());

// ---------------------------------------------------------------------------------------------
// Uploads: config text, signature as base64, certificate text

const readText = (file) => file.text();
async function readBase64(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function configBody(form, configText) {
  const body = { config: configText ?? (await readText(form.config.files[0])) };
  if (form.signature.files[0]) body.signature = await readBase64(form.signature.files[0]);
  if (form.certificate.files[0]) body.certificate = await readText(form.certificate.files[0]);
  return body;
}

$("#create-open").addEventListener("click", () => {
  const form = $("#create-form");
  form.reset();
  $(".result", form).textContent = "";
  $("#create-dialog").showModal();
});
$("#create-cancel").addEventListener("click", () => $("#create-dialog").close());
$("#create-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  try {
    await api("POST", "/api/containers", await configBody(form));
    $("#create-dialog").close();
    refreshContainers();
  } catch (e) {
    $(".result", form).textContent = e.message;
  }
});

// ---------------------------------------------------------------------------------------------
// Terminal: `run` (a shell) or the console, over a WebSocket

let term = null;

function openTerminal(v, kind) {
  closeTerminal();
  const dlg = $("#term-dialog");
  $("#term-title").textContent = `${kind === "run" ? "Shell in" : "Console of"} ${v.name}`;
  $("#term-status").textContent = "connecting…";
  dlg.showModal();
  const xterm = new window.Terminal({ cursorBlink: true, convertEol: false, fontSize: 14, scrollback: 2000 });
  const fit = new window.FitAddon.FitAddon();
  xterm.loadAddon(fit);
  xterm.open($("#term"));
  fit.fit();
  const q = new URLSearchParams({ csrf: state.csrf, cols: xterm.cols, rows: xterm.rows });
  if (kind === "run") {
    q.set("pty", "1");
    q.append("cmd", "/bin/sh");
  }
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/api/containers/${encodeURIComponent(v.uuid)}/${kind}?${q}`);
  ws.binaryType = "arraybuffer";
  const enc = new TextEncoder();
  ws.onopen = () => {
    $("#term-status").textContent = "connected";
    xterm.focus();
  };
  ws.onmessage = (m) => {
    if (typeof m.data === "string") {
      let msg = {};
      try {
        msg = JSON.parse(m.data);
      } catch (_) {
        return;
      }
      if (msg.error) {
        xterm.write(`\r\n\x1b[31m${msg.error}\x1b[0m\r\n`);
        $("#term-status").textContent = "failed";
      } else if ("exit" in msg) {
        const how = msg.exit === null ? msg.reason || "ended" : `exit status ${msg.exit}`;
        xterm.write(`\r\n[${how}]\r\n`);
        $("#term-status").textContent = how;
      }
    } else {
      xterm.write(new Uint8Array(m.data));
    }
  };
  ws.onclose = () => {
    if ($("#term-status").textContent === "connected") $("#term-status").textContent = "closed";
  };
  xterm.onData((d) => ws.readyState === WebSocket.OPEN && ws.send(enc.encode(d)));
  xterm.onBinary((d) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    ws.send(Uint8Array.from(d, (ch) => ch.charCodeAt(0) & 0xff));
  });
  xterm.onResize(({ cols, rows }) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ resize: { cols, rows } }));
  });
  const onWindowResize = () => fit.fit();
  window.addEventListener("resize", onWindowResize);
  term = { xterm, ws, onWindowResize };
}

function closeTerminal() {
  if (!term) return;
  window.removeEventListener("resize", term.onWindowResize);
  term.ws.close();
  term.xterm.dispose();
  term = null;
  $("#term").replaceChildren();
}
$("#term-close").addEventListener("click", () => {
  closeTerminal();
  $("#term-dialog").close();
});
$("#term-dialog").addEventListener("close", closeTerminal);

// ---------------------------------------------------------------------------------------------
// GuestOS page

async function loadGuestos() {
  const body = $("#guestos-table tbody");
  $("#guestos-error").textContent = "";
  if (!allowed("guestos_list")) {
    body.replaceChildren();
    $("#guestos-error").textContent = "The provisioned device does not list its GuestOSes.";
    return;
  }
  try {
    const { guestos } = await api("GET", "/api/guestos");
    body.replaceChildren(...guestos.map((g) => h("tr", { dataset: { name: g.name } },
      h("td", {}, g.name), h("td", {}, g.version), h("td", {}, g.hardware), h("td", {}, g.description || ""),
      h("td", {}, allowed("guestos_remove")
        ? h("button", { type: "button", onclick: () => removeGuestos(g.name) }, "Remove…") : null))));
  } catch (e) {
    if (e.status !== 401) $("#guestos-error").textContent = e.message;
  }
}

function removeGuestos(name) {
  confirmAction(`Remove GuestOS ${name}?`, "All its versions are deleted.",
    () => api("DELETE", `/api/guestos/${encodeURIComponent(name)}`))
    .then(loadGuestos, () => {});
}

function formHandler(sel, submit) {
  $(sel).addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    const out = $(".result", form);
    out.textContent = "…";
    try {
      out.textContent = (await submit(form)) || "Done.";
      form.reset();
    } catch (e) {
      out.textContent = e.message;
    }
  });
}

formHandler("#guestos-push", async (form) => {
  await api("POST", "/api/guestos", {
    config: await readText(form.config.files[0]),
    signature: await readBase64(form.signature.files[0]),
    certificate: await readText(form.certificate.files[0]),
  });
  loadGuestos();
  return "Installed.";
});

formHandler("#ca-register", async (form) => {
  await api("POST", "/api/cas", { certificate: await readText(form.certificate.files[0]) });
  return "Registered.";
});

// ---------------------------------------------------------------------------------------------
// Device page

async function loadDevicePage() {
  $("#device-error").textContent = "";
  try {
    await loadDevice();
  } catch (e) {
    return;
  }
  const d = state.device;
  const info = $("#device-info");
  if (!d) {
    info.replaceChildren();
    $("#device-error").textContent = "The device information is not available.";
    return;
  }
  const rows = [["Provisioned", d.provisioned ? "yes" : "no"]];
  if (d.hosted !== undefined) rows.push(["Mode", d.hosted ? "hosted" : "device"]);
  const s = d.stats;
  if (s) {
    rows.push(["System disk", `${fmtBytes(s.disk_system_used)} used of ${fmtBytes(s.disk_system)}`]);
    if (s.disk_containers != null) {
      rows.push(["Container disk", `${fmtBytes(s.disk_containers_used)} used of ${fmtBytes(s.disk_containers)}`]);
    }
    if (s.mem_total != null) rows.push(["Memory", `${fmtBytes(s.mem_available)} available of ${fmtBytes(s.mem_total)}`]);
  }
  info.replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { dataset: { key: k } }, v)]));
}

formHandler("#cert-upload", async (form) => {
  const r = await api("POST", "/api/device/cert", { certificate: await readText(form.certificate.files[0]) });
  return (r && r.message) || "Installed.";
});

$("#provision-open").addEventListener("click", () => {
  confirmAction("Set the device provisioned?",
    "From now on the daemon accepts only the commands needed to run containers (list, start, stop, " +
    "create, update_config, change_pin). GuestOS, CA, CSR and device commands are refused.",
    () => api("POST", "/api/device/provisioned", { confirm: true }))
    .then(loadDevicePage, () => {});
});

// ---------------------------------------------------------------------------------------------
// Start: an existing session (cookie) continues, otherwise the login form.

(async () => {
  try {
    const r = await fetch("/api/session", { credentials: "same-origin" });
    if (r.ok) {
      state.csrf = (await r.json()).csrf_token;
      await afterLogin();
      return;
    }
  } catch (_) {
    // Fall through to the login form.
  }
  showLogin();
})();
