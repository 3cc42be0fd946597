// The Mini App: Telegram's script gives us initData (signed by Telegram); the server checks
// it and answers with a session cookie, then the dashboard opens. No data is trusted here.
(function () {
  "use strict";
  function refused() {
    document.getElementById("opening").hidden = true;
    document.getElementById("refused").hidden = false;
  }
  var app = window.Telegram && window.Telegram.WebApp;
  if (!app || !app.initData) { refused(); return; }
  app.ready();
  var body = new URLSearchParams({ init_data: app.initData });
  fetch(document.location.pathname + "/login", { method: "POST", body: body, credentials: "same-origin" })
    .then(function (response) { return response.ok ? response.json() : Promise.reject(response.status); })
    .then(function (answer) { document.location.replace(answer.next); })
    .catch(refused);
})();
