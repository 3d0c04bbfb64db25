// Keyboard shortcuts for the review pages; the pages work without it.
// Queue: j/k move the selected row, o (or Enter) opens it, c/d/w decide it.
// Alert page and pagination: any element with data-key="<key>" is clicked by that key.
(function () {
  "use strict";
  var rows = Array.prototype.slice.call(document.querySelectorAll("tr[data-row]"));
  var current = -1;

  function select(i) {
    if (!rows.length) return;
    current = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach(function (r, k) { r.classList.toggle("selected", k === current); });
    rows[current].scrollIntoView({ block: "nearest" });
  }
  if (rows.length) select(0);

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" ||
              t.isContentEditable)) return;
    var key = e.key;
    var target = null;
    if (rows.length) {
      if (key === "j" || key === "k") { select(current + (key === "j" ? 1 : -1)); e.preventDefault(); return; }
      if (key === "o" || key === "Enter") { window.location.href = rows[current].getAttribute("data-href"); return; }
      target = rows[current].querySelector('[data-key="' + key + '"]');
    }
    if (!target) target = document.querySelector('body > main [data-key="' + key + '"]:not(tr [data-key])');
    if (target && !target.disabled) { e.preventDefault(); target.click(); }
  });
})();
