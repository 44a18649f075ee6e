// The live tail: server-sent events from /tail/stream, one line each.
(function () {
  var list = document.getElementById("tail"), status = document.getElementById("tail-status");
  var es = new EventSource(list.dataset.src);
  es.onopen = function () { status.textContent = "Live: newest at the bottom."; };
  es.onerror = function () { status.textContent = "Disconnected; retrying…"; };
  es.onmessage = function (m) {
    var it = JSON.parse(m.data), li = document.createElement("li");
    li.className = it.kind;
    var parts = [new Date(it.time).toLocaleTimeString(), it.kind, it.type];
    if (it.app) parts.push("app=" + it.app);
    if (it.chat) parts.push("chat=" + it.chat);
    if (it.plugin) parts.push("plugin=" + it.plugin);
    if (it.detail) parts.push("— " + it.detail);
    li.textContent = parts.join(" ");
    list.appendChild(li);
    while (list.children.length > 500) list.removeChild(list.firstChild);
  };
})();
