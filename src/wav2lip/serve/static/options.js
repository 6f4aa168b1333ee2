// The pages' option controls, built from the server's option table (GET /api/options): no option,
// default or choice is written in the pages themselves.
"use strict";

const OptionControls = {
  // Fill `container` with one control per option, grouped as the table groups them; `current` overrides
  // a default (the server's own detector and precision).
  build(container, table, current = {}) {
    container.textContent = "";
    const groups = new Map();
    for (const opt of table) {
      if (!groups.has(opt.group)) {
        const fieldset = document.createElement("fieldset");
        const legend = document.createElement("legend");
        legend.textContent = opt.group;
        fieldset.append(legend);
        container.append(fieldset);
        groups.set(opt.group, fieldset);
      }
      groups.get(opt.group).append(this.control(opt, opt.name in current ? current[opt.name] : opt.default));
    }
  },

  control(opt, value) {
    const label = document.createElement("label");
    label.title = opt.help;
    let field;
    if (opt.choices) {
      field = document.createElement("select");
      for (const choice of opt.choices) field.append(new Option(choice, choice, choice === value, choice === value));
    } else if (opt.type === "bool") {
      field = document.createElement("input");
      field.type = "checkbox";
      field.checked = Boolean(value);
      label.className = "check";
    } else {
      field = document.createElement("input");
      field.type = opt.type === "int" || opt.type === "float" ? "number" : "text";
      if (field.type === "number") {
        field.step = opt.type === "int" ? "1" : "any";
        if (opt.minimum !== null) field.min = opt.minimum;
        if (opt.maximum !== null) field.max = opt.maximum;
      }
      if (opt.placeholder) field.placeholder = opt.placeholder;
      field.value = value === null ? "" : Array.isArray(value) ? value.join(" ") : String(value);
    }
    field.name = opt.name;
    field.dataset.default = this.text(opt, value);
    const words = document.createElement("span");
    words.textContent = opt.label + (opt.unit ? ` (${opt.unit})` : "");
    if (opt.type === "bool") label.append(field, " ", words);
    else label.append(words, field);
    return label;
  },

  text(opt, value) {
    if (opt.type === "bool") return value ? "true" : "false";
    if (value === null || value === undefined) return "";
    return Array.isArray(value) ? value.join(" ") : String(value);
  },

  // {name: text} of the controls whose value is not the one the page showed first.
  changed(container) {
    const values = {};
    for (const field of container.querySelectorAll("[name]")) {
      const text = field.type === "checkbox" ? (field.checked ? "true" : "false") : field.value.trim();
      if (text !== field.dataset.default) values[field.name] = text;
    }
    return values;
  },
};
