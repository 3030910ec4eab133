// Segment builder: show only the inputs for each row's chosen kind of condition, and
// keep the count live as the form changes. Without this script every input shows and
// the Count button does the same job on the server.
(function () {
  "use strict";
  var form = document.getElementById("segment-form");
  if (!form || !window.fetch || !window.FormData) {
    return;
  }
  var output = document.getElementById("segment-count");
  var url = form.getAttribute("data-count-url");
  var timer = null;
  var latest = 0;

  function showKind(select) {
    var row = select.closest("fieldset.condition");
    var groups = row.querySelectorAll(".cond-fields");
    for (var i = 0; i < groups.length; i++) {
      groups[i].hidden = groups[i].getAttribute("data-kind") !== select.value;
    }
  }

  function say(mainText, detailText, isError) {
    output.textContent = "";
    var main = document.createElement("p");
    main.className = isError ? "error" : "big";
    if (isError) {
      main.textContent = mainText;
    } else {
      var strong = document.createElement("strong");
      strong.textContent = mainText;
      main.appendChild(strong);
      main.appendChild(document.createTextNode(" can be mailed"));
    }
    output.appendChild(main);
    if (detailText) {
      var detail = document.createElement("p");
      detail.className = "meta";
      detail.textContent = detailText;
      output.appendChild(detail);
    }
  }

  function count() {
    var ticket = ++latest;
    var body = new FormData(form);
    body.delete("do");
    body.delete("add");
    output.setAttribute("aria-busy", "true");
    fetch(url, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        return response.json().catch(function () {
          return { error: "The count is not available just now." };
        });
      })
      .then(function (data) {
        if (ticket !== latest) {
          return; // an older answer arriving late must not overwrite a newer one
        }
        if (data.error) {
          say("Not counted yet: " + data.error, "", true);
        } else {
          say(
            data.mailable.toLocaleString(),
            data.matching.toLocaleString() +
              " match in all, counting people who unsubscribed, are taking a break," +
              " bounced or never joined the list.",
            false
          );
        }
      })
      .catch(function () {
        if (ticket === latest) {
          say("The count is not available just now.", "", true);
        }
      })
      .finally(function () {
        output.removeAttribute("aria-busy");
      });
  }

  function soon() {
    window.clearTimeout(timer);
    timer = window.setTimeout(count, 400);
  }

  var selects = form.querySelectorAll("select.cond-type");
  for (var i = 0; i < selects.length; i++) {
    showKind(selects[i]);
  }
  form.addEventListener("change", function (event) {
    if (event.target.classList.contains("cond-type")) {
      showKind(event.target);
    }
    soon();
  });
  form.addEventListener("input", soon);
})();
