// Filter forms show their view as soon as a choice changes (the Show button stays for keyboards
// and for browsers without scripts), and leave empty fields out of the URL.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("form[data-autosubmit]").forEach(function (form) {
    form.addEventListener("submit", function () {
      form.querySelectorAll("input, select").forEach(function (field) {
        if (field.name && (field.value === "" || field.value === field.dataset.default)) {
          field.disabled = true;
        }
      });
    });
    form.querySelectorAll("select").forEach(function (select) {
      select.addEventListener("change", function () {
        if (select.name === "range") {
          form.querySelectorAll("input[type=date]").forEach(function (d) { d.value = ""; });
        }
        if (select.name === "waba") {
          var number = form.querySelector("select[name=number]");
          if (number) { number.value = ""; }
        }
        form.requestSubmit();
      });
    });
  });
});
// Back to a page whose fields were left out of its URL: they are fields again.
window.addEventListener("pageshow", function () {
  document.querySelectorAll("form[data-autosubmit] [disabled]").forEach(function (field) {
    field.disabled = false;
  });
});
