// The live status page: polls /status.json every second and renders it. No framework, no
// network but this server.
"use strict";

const EVERY_MS = 1000;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function number(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function loadBar(location) {
  const { currentRequests, capacity } = location;
  if (currentRequests === null || capacity === null || capacity <= 0) {
    return el("span", {}, currentRequests === null ? "–" : `${currentRequests}`);
  }
  const share = Math.min(1, currentRequests / capacity);
  const bar = el("div", { class: share >= 1 ? "bar full" : "bar", title: `${currentRequests} / ${capacity}` },
    el("span", { style: `width: ${(share * 100).toFixed(0)}%` }));
  return el("div", {}, bar, el("small", {}, ` ${currentRequests}/${capacity}`));
}

function locationRow(scope, service, location) {
  const health = location.health || "unknown";
  return el("tr", {
      "data-port": location.port, "data-host": location.host, "data-health": health,
      "data-service": service, "data-scope": scope,
    },
    el("td", {}, el("span", { class: `badge ${health}` }, health)),
    el("td", {}, `${location.host}:${location.port}`),
    el("td", {}, loadBar(location)),
    el("td", { class: "num" }, location.utilization === null ? "–" : `${(location.utilization * 100).toFixed(0)} %`),
    el("td", { class: "num" }, location.reportAgeSeconds === null ? "–" : `${number(location.reportAgeSeconds, 1)} s`),
    el("td", { class: "num wide" }, location.recentHandOuts ?? "–"),
    el("td", { class: "wide" }, location.feed || "–"),
  );
}

function serviceSection(service) {
  const name = service.scope ? `${service.scope}/${service.service}` : service.service;
  const head = el("tr", {},
    el("th", {}, "health"), el("th", {}, "location"), el("th", {}, "load"),
    el("th", {}, "utilisation"), el("th", {}, "report age"),
    el("th", { class: "wide" }, "recent hand-outs"), el("th", { class: "wide" }, "feed"));
  const body = el("tbody", {}, ...service.locations.map((l) => locationRow(service.scope, service.service, l)));
  return el("section", { "data-service": name },
    el("h2", {}, name, " ", el("span", { class: "counts" },
      `${service.healthy} healthy, ${service.unhealthy} unhealthy, ${service.unknown} unknown · ${service.handOuts} hand-outs`)),
    el("div", { class: "wrap" }, el("table", {}, el("thead", {}, head), body)));
}

function memberRow(member) {
  const state = member.state || "?";
  const healthy = state === "Ready" ? "healthy" : (state === "Failed" || state === "BackingOff" ? "unhealthy" : "unknown");
  const log = el("a", { href: `/members/${encodeURIComponent(member.member)}/log` }, "log");
  return el("tr", { "data-member": member.member, "data-state": state, "data-pid": member.pid ?? "" },
    el("td", {}, el("span", { class: `badge ${healthy}` }, state)),
    el("td", {}, member.member),
    el("td", { class: "num" }, member.pid ?? "–"),
    el("td", { class: "num" }, member.port || "–"),
    el("td", { class: "num" }, member.restarts ?? 0),
    el("td", { class: "wide" }, member.last_reason || "–"),
    el("td", { class: "num" }, member.uptime_seconds === null || member.uptime_seconds === undefined
      ? "–" : `${number(member.uptime_seconds, 0)} s`),
    el("td", {}, log),
  );
}

function membersSection(members) {
  const head = el("tr", {},
    el("th", {}, "state"), el("th", {}, "member"), el("th", {}, "pid"), el("th", {}, "port"),
    el("th", {}, "restarts"), el("th", { class: "wide" }, "last reason"), el("th", {}, "uptime"),
    el("th", {}, "output"));
  return el("section", { "data-members": members.length },
    el("h2", {}, "members ", el("span", { class: "counts" },
      `${members.filter((m) => m.state === "Ready").length} of ${members.length} ready`)),
    el("div", { class: "wrap" }, el("table", {}, el("thead", {}, head),
      el("tbody", {}, ...members.map(memberRow)))));
}

function render(status) {
  document.getElementById("role").textContent = status.role || "";
  const summary = document.getElementById("summary");
  const registry = status.registry || {};
  summary.className = status.ready ? "" : "stale";
  const what = status.registry
    ? ` · registry ${registry.backend} (${registry.locations} locations${registry.up ? "" : ", stale"})`
    : (status.name ? ` · ${status.name}` : "");
  summary.textContent = status.ready ? `ready${what}` : `not ready: ${status.notReadyReason || "?"}`;
  const services = document.getElementById("services");
  const sections = (status.services || []).map(serviceSection);
  if (Array.isArray(status.members)) sections.unshift(membersSection(status.members));
  services.replaceChildren(...sections);
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function poll() {
  try {
    const answer = await fetch("/status.json", { cache: "no-store" });
    if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
    render(await answer.json());
  } catch (error) {
    const summary = document.getElementById("summary");
    summary.className = "stale";
    summary.textContent = `cannot read /status.json: ${error.message}`;
  } finally {
    setTimeout(poll, EVERY_MS);
  }
}

poll();
