// Keeps the new-campaign page's audience count and sample up to date as the rule changes.
// Without JavaScript the "Count the audience" button does the same with a page load.
(function () {
  "use strict";
  var form = document.getElementById("campaign-form");
  if (!form) { return; }
  var audienceFields = ["lapsed_days", "segments", "min_spent", "cooldown_days", "limit"];
  var timer = null;
  var latest = 0;
  function refresh() {
    var params = new URLSearchParams();
    new FormData(form).forEach(function (value, name) {
      if (audienceFields.indexOf(name) !== -1) { params.append(name, value); }
    });
    var asked = ++latest;
    fetch(form.getAttribute("data-preview-url") + "?" + params.toString(), { credentials: "same-origin" })
      .then(function (response) { return response.text(); })
      .then(function (html) {
        if (asked !== latest) { return; }  // a newer answer is on its way
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("audience-preview");
        var current = document.getElementById("audience-preview");
        if (fresh && current) { current.replaceWith(fresh); }
      })
      .catch(function () { /* keep the last count; the button still works */ });
  }
  function changed(event) {
    if (audienceFields.indexOf(event.target.name) === -1) { return; }
    clearTimeout(timer);
    timer = setTimeout(refresh, 300);
  }
  form.addEventListener("input", changed);
  form.addEventListener("change", changed);
})();
