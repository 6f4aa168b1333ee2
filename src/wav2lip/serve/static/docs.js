// /docs: the API described by /openapi.json, rendered here so it works offline (no CDN).
"use strict";

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function typeOf(schema) {
  if (!schema) return "";
  if (schema.enum) return schema.enum.join(" | ");
  if (schema.format === "binary") return "file";
  return schema.type || (schema.anyOf || []).map(typeOf).join(" | ");
}

function fieldTable(rows) {
  const table = element("table", undefined, "fields");
  for (const [name, type, text, required] of rows) {
    const row = table.insertRow();
    row.insertCell().append(element("code", name + (required ? " *" : "")));
    row.insertCell().textContent = type;
    row.insertCell().textContent = text || "";
  }
  return table;
}

async function render() {
  const spec = await (await fetch("/openapi.json")).json();
  const main = document.getElementById("api");
  main.textContent = "";
  main.append(element("p", spec.info.description));
  if (spec.components && spec.components.securitySchemes) {
    main.append(element("p", "When the server has a token, /api/jobs needs the header 'Authorization: Bearer TOKEN'.",
      "muted"));
  }
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const section = element("section", undefined, "endpoint");
      section.append(element("h2", `${method.toUpperCase()} ${path}`));
      if (op.summary) section.append(element("p", op.summary));
      if (op.description) section.append(element("p", op.description, "muted"));
      const params = (op.parameters || []).map((p) => [p.name, `${p.in}: ${typeOf(p.schema)}`, p.description, p.required]);
      if (params.length) section.append(fieldTable(params));
      const form = op.requestBody && op.requestBody.content["multipart/form-data"];
      if (form) {
        section.append(element("h3", "multipart/form-data fields"));
        const required = form.schema.required || [];
        section.append(fieldTable(Object.entries(form.schema.properties).map(([name, s]) =>
          [name, typeOf(s) + (s.example ? ` (e.g. ${s.example})` : ""), s.description, required.includes(name)])));
      }
      const answers = Object.entries(op.responses || {}).map(([code, r]) => `${code} ${r.description}`);
      section.append(element("p", `Answers: ${answers.join(" · ")}`, "muted"));
      main.append(section);
    }
  }
}

render().catch((e) => { document.getElementById("api").textContent = `Could not read /openapi.json: ${e}`; });
