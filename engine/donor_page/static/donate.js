/* The donation page's script: amounts, the employer question, tokenizing the card in the browser (Stripe.js or the
   simulated processor's Stripe-shaped tokenizer, behind one createPaymentMethod), posting the pm_ token to
   /v1/donations with the page's idempotency key, then confirmation, processing (polling) or the error.
   No framework, no build step. */
(function () {
  "use strict";
  var form = document.getElementById("donate-form");
  if (!form) return;
  var config = form.dataset;
  var exponent = parseInt(config.exponent, 10);
  var threshold = parseInt(config.itemizationThreshold, 10);
  var button = document.getElementById("donate-button");
  var summary = document.getElementById("form-error");
  var employerFields = document.getElementById("employer-fields");
  var challengeFields = document.getElementById("challenge");
  var otherAmount = document.getElementById("amount-other");
  var storageKey = "surge-donate-idempotency:" + config.campaign;
  var POLL_INTERVAL_MS = 1500;
  var POLL_ATTEMPTS_MAX = 400;
  var busy = false;

  // A reload before the answer came back reuses the key of the attempt in flight: the same gift, not a second one.
  var idempotencyKey = readStored() || config.idempotencyKey;

  function readStored() {
    try { return window.sessionStorage.getItem(storageKey); } catch (e) { return null; }
  }
  function store(value) {
    try {
      if (value) window.sessionStorage.setItem(storageKey, value); else window.sessionStorage.removeItem(storageKey);
    } catch (e) { /* storage disabled: the rendered key still guards double clicks */ }
  }
  function freshKey() {
    var bytes = new Uint8Array(18);
    window.crypto.getRandomValues(bytes);
    return "page_" + Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  // ---- amounts ------------------------------------------------------------------------------------------------
  function parseAmount(text) {
    var pattern = exponent === 0 ? /^\d{1,9}$/ : new RegExp("^\\d{1,9}(\\.\\d{1," + exponent + "})?$");
    text = (text || "").trim().replace(/^[$€£]/, "");
    if (!pattern.test(text)) return null;
    var parts = text.split(".");
    var fraction = (parts[1] || "").padEnd(exponent, "0");
    var minor = parseInt(parts[0], 10) * Math.pow(10, exponent) + (exponent ? parseInt(fraction, 10) : 0);
    return minor >= 1 ? minor : null;
  }
  function selectedAmount() {
    if (otherAmount.value.trim()) return parseAmount(otherAmount.value);
    var checked = form.querySelector("input.preset:checked");
    return checked ? parseInt(checked.value, 10) : null;
  }
  function formatAmount(minor) {
    return (minor / Math.pow(10, exponent)).toFixed(exponent) + " " + config.currency;
  }
  function showEmployer(show) {
    employerFields.hidden = !show;
    ["employer", "occupation"].forEach(function (id) { document.getElementById(id).required = show; });
  }
  function amountChanged() {
    var amount = selectedAmount();
    if (amount !== null && amount > threshold) showEmployer(true);
    if (tokenizer && tokenizer.amountChanged && amount !== null) tokenizer.amountChanged(amount);
  }
  otherAmount.addEventListener("input", function () {
    if (otherAmount.value.trim()) form.querySelectorAll("input.preset").forEach(function (p) { p.checked = false; });
    amountChanged();
  });
  form.querySelectorAll("input.preset").forEach(function (preset) {
    preset.addEventListener("change", function () { otherAmount.value = ""; amountChanged(); });
  });

  // ---- tokenizers: one interface, createPaymentMethod(billing) → {paymentMethod: {id}} or {error: {message}} ---
  function simulatedTokenizer(url) {
    return {
      createPaymentMethod: function () {
        var expiry = document.getElementById("card-expiry").value.split("/");
        var body = new URLSearchParams({
          type: "card",
          "card[number]": document.getElementById("card-number").value,
          "card[exp_month]": (expiry[0] || "").trim(),
          "card[exp_year]": (expiry[1] || "").trim(),
          "card[cvc]": document.getElementById("card-cvc").value
        });
        return fetch(url, { method: "POST", headers: { Authorization: "Bearer " + config.formKey }, body: body })
          .then(function (response) {
            return response.json().then(function (json) {
              return response.ok ? { paymentMethod: json } : { error: json.error || { message: "The card was refused." } };
            });
          });
      },
      clear: function () {
        ["card-number", "card-expiry", "card-cvc"].forEach(function (id) { document.getElementById(id).value = ""; });
      },
      focus: function () { document.getElementById("card-number").focus(); }
    };
  }
  function stripeTokenizer(publishableKey) {
    var stripe = window.Stripe(publishableKey);
    var elements = stripe.elements({
      mode: "payment", amount: selectedAmount() || 100, currency: config.currency.toLowerCase(),
      paymentMethodCreation: "manual"
    });
    var element = elements.create("payment");
    element.mount("#payment-element");
    return {
      createPaymentMethod: function (billing) {
        return elements.submit().then(function (submitted) {
          if (submitted.error) return { error: submitted.error };
          return stripe.createPaymentMethod({ elements: elements, params: { billing_details: billing } });
        });
      },
      amountChanged: function (amount) { elements.update({ amount: amount }); },
      clear: function () { element.clear(); },
      focus: function () { element.focus(); }
    };
  }
  var tokenizer = null;
  if (config.tokenizer === "stripe" && window.Stripe) tokenizer = stripeTokenizer(config.stripeKey);
  else if (config.tokenizer === "simulated") tokenizer = simulatedTokenizer(config.tokenizerUrl);

  // ---- challenge (hCaptcha / Turnstile / the test verifier's checkbox) ----------------------------------------
  function challengeToken() {
    if (challengeFields.hidden) return null;
    if (config.challengeProvider === "test") {
      var box = document.getElementById("challenge-test");
      return box && box.checked ? "test_pass_page" : null;
    }
    var name = config.challengeProvider === "hcaptcha" ? "h-captcha-response" : "cf-turnstile-response";
    var field = form.querySelector("[name='" + name + "']");
    return field && field.value ? field.value : null;
  }
  function resetChallenge() {
    if (config.challengeProvider === "turnstile" && window.turnstile) window.turnstile.reset();
    if (config.challengeProvider === "hcaptcha" && window.hcaptcha) window.hcaptcha.reset();
    var box = document.getElementById("challenge-test");
    if (box) box.checked = false;
  }

  // ---- errors, announced ----------------------------------------------------------------------------------------
  function clearErrors() {
    summary.hidden = true;
    summary.textContent = "";
    form.querySelectorAll("[aria-invalid]").forEach(function (input) {
      input.removeAttribute("aria-invalid");
      var note = document.getElementById(input.id + "-error");
      if (note) note.remove();
    });
  }
  function fieldError(input, message) {
    input.setAttribute("aria-invalid", "true");
    var note = document.createElement("p");
    note.className = "field-error";
    note.id = input.id + "-error";
    note.textContent = message;
    input.insertAdjacentElement("afterend", note);
    var described = (input.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
    if (described.indexOf(note.id) < 0) described.push(note.id);
    input.setAttribute("aria-describedby", described.join(" "));
  }
  function showError(message, input) {
    summary.textContent = message;
    summary.hidden = false;
    if (input) { fieldError(input, message); input.focus(); } else { summary.focus(); }
    reportHeight();
  }
  function inputForParam(param) {
    if (!param) return null;
    var name = param.replace(/^donor\./, "");
    if (name === "amount") return otherAmount;
    if (name === "citizenship_attested") return form.querySelector("input.attestation");
    return document.getElementById(name);
  }

  // ---- submitting --------------------------------------------------------------------------------------------
  function donor() {
    var fields = ["first_name", "last_name", "email", "address_line1", "address_line2", "city", "state",
                  "postal_code", "country", "phone", "employer", "occupation"];
    var result = {};
    fields.forEach(function (name) {
      var value = document.getElementById(name).value.trim();
      if (value) result[name] = value;
    });
    var attestations = form.querySelectorAll("input.attestation");
    if (config.requireAttestation === "true" || attestations.length) {
      result.citizenship_attested = Array.prototype.every.call(attestations, function (box) { return box.checked; });
    }
    return result;
  }
  function firstInvalid() {
    var inputs = form.querySelectorAll("input");
    for (var i = 0; i < inputs.length; i++) {
      if (!inputs[i].closest("[hidden]") && !inputs[i].checkValidity()) return inputs[i];
    }
    return null;
  }
  function labelOf(input) {
    var label = form.querySelector("label[for='" + input.id + "']");
    return label ? label.textContent.trim() : "This field";
  }
  function setBusy(value) {
    busy = value;
    button.disabled = value;
    button.setAttribute("aria-busy", value ? "true" : "false");
    button.textContent = value ? "Processing…" : "Donate";
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (busy) return;  // a double click is one attempt; the idempotency key covers what slips past
    clearErrors();
    var amount = selectedAmount();
    if (amount === null) return showError("Choose an amount, or enter one such as 35 or 35.50.", otherAmount);
    if (amount > threshold && employerFields.hidden) showEmployer(true);
    var invalid = firstInvalid();
    if (invalid) {
      var message = invalid.classList.contains("attestation") ? "Please confirm each statement to donate."
        : labelOf(invalid) + (invalid.validity.valueMissing ? " is required." : " is not valid.");
      return showError(message, invalid);
    }
    var challenge = challengeToken();
    if (!challengeFields.hidden && !challenge) return showError("Please complete the challenge to donate.", null);
    if (!tokenizer) return showError("Card payments are not configured for this page.", null);
    setBusy(true);
    var person = donor();
    var billing = { name: person.first_name + " " + person.last_name, email: person.email };
    tokenizer.createPaymentMethod(billing).then(function (result) {
      if (result.error) {
        setBusy(false);
        showError(result.error.message || "The card was refused.", null);
        if (tokenizer.focus) tokenizer.focus();
        return;
      }
      var body = {
        amount: amount, currency: config.currency.toLowerCase(), campaign: config.campaign,
        donor: person, payment_method: result.paymentMethod.id
      };
      if (config.refcode) body.refcode = config.refcode;
      if (challenge) body.challenge = challenge;
      store(idempotencyKey);
      return post(body, 0);
    }).catch(function () {
      setBusy(false);
      showError("The network failed; your card was not charged twice. Please try again.", null);
    });
  });

  function post(body, retries) {
    // "Make it monthly": the same body makes a recurring plan (the card saved, the first gift charged now).
    // "Save my card": a plan of one installment — this gift on the saved card, which stays saved for Quick Donate.
    var monthly = document.getElementById("make-monthly");
    var saveCard = document.getElementById("save-card");
    var recurring = monthly !== null && monthly.checked;
    var saving = !recurring && saveCard !== null && saveCard.checked;
    var terms = recurring ? { interval: "month" } : { interval: "month", installments: 1 };
    return fetch(recurring || saving ? "/v1/recurring/plans" : "/v1/donations", {
      method: "POST",
      headers: { Authorization: "Bearer " + config.formKey, "Content-Type": "application/json",
                 "Idempotency-Key": idempotencyKey },
      body: JSON.stringify(recurring || saving ? Object.assign(terms, body) : body)
    }).then(function (response) {
      return response.json().then(function (json) { return answered(response.status, json, body, retries); });
    });
  }

  function answered(status, json, body, retries) {
    if ((status === 201 || status === 200) && json.object === "recurring_plan") return monthlyConfirmed(json);
    if (status === 201) return confirmed(json);
    if (status === 202) return processing(json);
    var error = json.error || {};
    if (status === 409 && error.code === "idempotency_in_progress" && retries < 20) {
      // The first attempt of this key is still with the processor: ask again shortly, never charge twice.
      return new Promise(function (resolve) { setTimeout(resolve, POLL_INTERVAL_MS); })
        .then(function () { return post(body, retries + 1); });
    }
    setBusy(false);
    if (status === 402) {
      // Declined: the donor may try another card, which is a new attempt with its own key.
      newAttempt();
      if (tokenizer.clear) tokenizer.clear();
      showError(error.message || "Your card was declined.", null);
      return;
    }
    if (status === 428 && error.code === "challenge_required") {
      challengeFields.hidden = false;
      resetChallenge();
      showError("Please complete the challenge below, then donate again.", null);
      return;
    }
    if (status === 409 && error.code === "idempotency_key_reused") newAttempt();  // the donor changed the gift
    if (error.param === "donor.employer" || error.param === "donor.occupation") showEmployer(true);
    showError(error.message || "The donation could not be made.", inputForParam(error.param));
  }

  function newAttempt() {
    idempotencyKey = freshKey();
    store(null);
  }

  function confirmed(donation) {
    store(null);
    form.hidden = true;
    document.getElementById("processing").hidden = true;
    document.getElementById("confirmation-amount").textContent = formatAmount(donation.amount);
    document.getElementById("confirmation-id").textContent = donation.id;
    var section = document.getElementById("confirmation");
    section.hidden = false;
    section.focus();
    reportHeight();
  }

  function monthlyConfirmed(plan) {
    store(null);
    form.hidden = true;
    if (plan.installments === 1) {
      document.getElementById("saved-amount").textContent = formatAmount(plan.amount);
      var saved = document.getElementById("saved-confirmation");
      saved.hidden = false;
      saved.focus();
      reportHeight();
      return;
    }
    document.getElementById("monthly-amount").textContent = formatAmount(plan.amount);
    if (plan.manage_url) document.getElementById("monthly-manage").href = plan.manage_url;
    var section = document.getElementById("monthly-confirmation");
    section.hidden = false;
    section.focus();
    reportHeight();
  }

  function processing(donation) {
    form.hidden = true;
    var section = document.getElementById("processing");
    section.hidden = false;
    section.focus();
    reportHeight();
    var attempts = 0;
    function poll() {
      attempts += 1;
      fetch("/v1/donations/" + encodeURIComponent(donation.id), {
        headers: { Authorization: "Bearer " + config.formKey }
      }).then(function (response) { return response.json(); }).then(function (current) {
        if (current.status === "succeeded") return confirmed(current);
        if (current.status === "declined" || current.status === "failed") {
          section.hidden = true;
          form.hidden = false;
          newAttempt();
          if (tokenizer.clear) tokenizer.clear();
          showError(current.failure_message || "Your card was declined.", null);
          return;
        }
        if (attempts < POLL_ATTEMPTS_MAX) setTimeout(poll, POLL_INTERVAL_MS);
      }).catch(function () {
        if (attempts < POLL_ATTEMPTS_MAX) setTimeout(poll, POLL_INTERVAL_MS);
      });
    }
    setTimeout(poll, POLL_INTERVAL_MS);
  }

  // ---- embedding: tell the parent page how tall this page is -----------------------------------------------
  function reportHeight() {
    if (window.parent === window) return;
    // The content's height, not the document's: inside a frame that is at least the frame's own height, which
    // would never let the frame shrink (after the confirmation replaces the form).
    var height = Math.ceil(document.getElementById("donate").getBoundingClientRect().bottom + window.scrollY);
    window.parent.postMessage({ type: "surge-donate-height", height: height }, "*");
  }
  if (window.ResizeObserver) new ResizeObserver(reportHeight).observe(document.body);
  reportHeight();
  amountChanged();
})();
