// The ticket app in the browser: logs in with the gateway's cookies, lists
// and creates tickets, and follows new ones over a WebSocket.
//
// Everything is on one origin (the gateway routes "/" here and "/api" to the
// ticket API), so fetch sends the cookies by default, they are first-party
// (SameSite=Lax is enough), and the gateway's CSRF rule is met by the
// Origin header the browser adds to every POST. JavaScript never sees a
// token: both cookies are HttpOnly.
"use strict";

const $ = (id) => document.getElementById(id);

// Calls that must not trigger a refresh: they are the ones that set cookies.
const NO_REFRESH = ["/api/auth/login", "/api/auth/register", "/api/auth/refresh"];

// A JSON request on this origin. An expired access cookie is renewed once
// with the refresh cookie (Path=/api/auth, so only the gateway sees it), then
// the request is sent again.
async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response = await fetch(path, init);
  if (response.status === 401 && !NO_REFRESH.includes(path)) {
    const refreshed = await fetch("/api/auth/refresh", { method: "POST" });
    if (refreshed.ok) {
      response = await fetch(path, init);
    }
  }
  return response;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.message || body.error || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

// --- Logging in and out ---------------------------------------------------

function showLogin(message) {
  closeLive();
  $("tickets").hidden = true;
  $("login").hidden = false;
  $("login-message").textContent = message || "";
}

async function submitCredentials(path) {
  const form = $("login-form");
  if (!form.reportValidity()) {
    return;
  }
  const response = await api("POST", path, {
    username: form.elements.username.value,
    password: form.elements.password.value,
  });
  if (!response.ok) {
    $("login-message").textContent = await errorMessage(response);
    return;
  }
  form.elements.password.value = "";
  await start();
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  submitCredentials("/api/auth/login");
});
$("register").addEventListener("click", () => submitCredentials("/api/auth/register"));
$("logout").addEventListener("click", async () => {
  await api("POST", "/api/auth/logout");
  showLogin("Logged out.");
});

// --- Tickets --------------------------------------------------------------

const shown = new Set();

function addTicket(ticket) {
  if (shown.has(ticket.id)) {
    return;
  }
  shown.add(ticket.id);
  const item = document.createElement("li");
  item.textContent = ticket.title;
  const by = document.createElement("small");
  by.textContent = `#${ticket.id} by ${ticket.created_by}`;
  item.append(by);
  $("list").prepend(item);
}

async function loadTickets() {
  const response = await api("GET", "/api/tickets");
  if (response.status === 401) {
    showLogin("Your session has ended; log in again.");
    return;
  }
  if (!response.ok) {
    $("live").textContent = await errorMessage(response);
    return;
  }
  $("list").replaceChildren();
  shown.clear();
  for (const ticket of await response.json()) {
    addTicket(ticket);
  }
}

$("new-ticket").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = event.target;
  const response = await api("POST", "/api/tickets", { title: form.elements.title.value });
  if (response.ok) {
    form.elements.title.value = "";
    addTicket(await response.json());
  } else if (response.status === 401) {
    showLogin("Your session has ended; log in again.");
  } else {
    $("live").textContent = await errorMessage(response);
  }
});

// --- Live updates ---------------------------------------------------------

let socket = null;
let retryDelay = 1000;
let retryTimer = null;

function closeLive() {
  clearTimeout(retryTimer);
  if (socket) {
    socket.onclose = null;
    socket.close(1000);
    socket = null;
  }
}

// The handshake carries the access cookie like any request on this origin,
// and the browser's Origin header, which the gateway checks for a cookie
// handshake (cross-site WebSocket hijacking).
function openLive() {
  closeLive();
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(`${scheme}//${location.host}/api/tickets/live`);
  socket.onopen = () => {
    retryDelay = 1000;
    $("live").textContent = "Live: new tickets appear as they are created.";
  };
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "ticket_created") {
      addTicket(message.ticket);
    } else if (message.type === "resync") {
      loadTickets();
    }
  };
  socket.onclose = async (event) => {
    socket = null;
    // 1008 with "session revoked" or "session ended": a logout (here or
    // elsewhere), not a network drop. Do not reconnect.
    if (event.code === 1008) {
      showLogin(`Logged out: ${event.reason || "session ended"}.`);
      return;
    }
    $("live").textContent = "Live updates interrupted; reconnecting…";
    retryTimer = setTimeout(async () => {
      // Renews the access cookie if it expired meanwhile.
      const me = await api("GET", "/api/auth/me");
      if (!me.ok) {
        showLogin("Your session has ended; log in again.");
        return;
      }
      await loadTickets();
      openLive();
    }, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 30000);
  };
}

// --- Start ----------------------------------------------------------------

async function start() {
  const me = await api("GET", "/api/auth/me");
  if (!me.ok) {
    showLogin("");
    return;
  }
  const user = await me.json();
  $("username").textContent = user.username;
  $("login").hidden = true;
  $("tickets").hidden = false;
  await loadTickets();
  openLive();
}

start();
