// publish.mjs publishes one cart's commands to cartworker as the contract
// asks (README "Publish from any language", command/schema) and prints each
// outcome event. Exit status: 0 when every command was applied, 1 when one
// was rejected, 2 on a timeout or a NATS failure.
//
//   NATS_URL=nats://127.0.0.1:4222 node publish.mjs [--delete]
//
// CART_ID names the cart (default: a new one), CART_SUBJECT_PREFIX the
// subjects' first token (default cart), EVENT_TIMEOUT_MS how long to wait
// for each outcome (default 10000). NATS_TOKEN, or NATS_USER and
// NATS_PASSWORD, authenticate.
import { randomBytes, randomUUID } from "node:crypto";
import { connect, headers, JSONCodec } from "nats";

const natsURL = process.env.NATS_URL || "nats://127.0.0.1:4222";
const prefix = process.env.CART_SUBJECT_PREFIX || "cart";
const cartID = process.env.CART_ID || `node-${randomBytes(4).toString("hex")}`;
const timeoutMs = Number(process.env.EVENT_TIMEOUT_MS || 10000);
const withDelete = process.argv.includes("--delete");

// The lines to add, one add-item each. Prices are JSON numbers with at most
// 4 decimal places: more real digits are refused with invalid_price.
const items = [
  { item_code: "ITEM001", quantity: 2, unit_price: 120, description: "Coffee", tax_code: "01" },
  { item_code: "ITEM002", quantity: 1, unit_price: 450, description: "Sandwich", tax_code: "11" },
  { item_code: "ITEM004", quantity: 1, unit_price: 99.5, description: "Gum", tax_code: "00" },
];

// One W3C trace for the whole run, each command a span of its own: look
// the trace id up in your tracing backend to follow the commands.
const traceID = randomBytes(16).toString("hex");
const traceparent = () => `00-${traceID}-${randomBytes(8).toString("hex")}-01`;

const jc = JSONCodec();
const auth = process.env.NATS_TOKEN
  ? { token: process.env.NATS_TOKEN }
  : process.env.NATS_USER
    ? { user: process.env.NATS_USER, pass: process.env.NATS_PASSWORD }
    : {};
let nc;
try {
  nc = await connect({ servers: natsURL.split(","), ...auth });
} catch (err) {
  console.error(`cannot connect to NATS_URL ${natsURL}: ${err.message}`);
  process.exit(2);
}
const js = nc.jetstream();

// Outcome events travel on core NATS and are not stored: subscribe before
// publishing, and flush so that the server knows the subscription before
// the first command can be applied.
const waiting = new Map(); // command id → resolve of its outcome
const sub = nc.subscribe(`${prefix}.evt.${cartID}.*`);
(async () => {
  for await (const m of sub) {
    const ev = jc.decode(m.data);
    waiting.get(ev.command_id)?.(ev); // a later duplicate event finds no one
  }
})();
await nc.flush();

// outcome resolves with the first event of command id, and rejects after
// timeoutMs.
function outcome(id) {
  const p = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      waiting.delete(id);
      reject(new Error(`no outcome event for command ${id} within ${timeoutMs} ms`));
    }, timeoutMs);
    waiting.set(id, (ev) => {
      clearTimeout(timer);
      waiting.delete(id);
      resolve(ev);
    });
  });
  p.catch(() => {}); // awaited below; this only keeps a failed publish from leaving it unhandled
  return p;
}

// send publishes one command and waits for its outcome event.
async function send(type, fields) {
  // Ids must be unique across all carts: JetStream's de-duplication is
  // stream-wide, and the worker records each id in its cart.
  const id = randomUUID();
  const h = headers();
  h.set("Nats-Msg-Id", id); // JetStream drops a republish within 2 minutes
  h.set("traceparent", traceparent());
  const subject = `${prefix}.cmd.${cartID}.${type}`;
  const event = outcome(id); // listen for it before it can be applied
  let ack;
  try {
    ack = await js.publish(subject, jc.encode({ id, type, cart_id: cartID, ...fields }), {
      headers: h,
      expect: { streamName: "CART_COMMANDS" },
    });
  } catch (err) {
    const why = err.code === "503" ? "no stream stores it: is the worker running, with this prefix?" : err.message;
    throw new Error(`publish ${subject}: ${why}`);
  }
  console.log(`${type} ${id} stored at ${ack.stream} #${ack.seq}${ack.duplicate ? " (duplicate)" : ""}`);
  const ev = await event;
  console.log(`event: ${JSON.stringify(ev)}`);
  if (ev.outcome !== "applied") {
    throw Object.assign(new Error(`${type} ${id} rejected: ${ev.error?.code}: ${ev.error?.message}`), { rejected: true });
  }
}

let status = 0;
console.log(`cart ${cartID}`);
console.log(`trace id: ${traceID}`);
try {
  // cache creates the cart. Each send waits for JetStream's ack before the
  // next command, so the cache is stored before the add-items: commands
  // apply in stream order.
  await send("cache", { tenant_id: "T1", store_code: "S1", terminal_no: 1 });
  for (const item of items) {
    await send("add-item", { items: [item] });
  }
  if (withDelete) {
    await send("delete", {});
  }
} catch (err) {
  console.error(err.message);
  status = err.rejected ? 1 : 2;
}
await nc.drain();
process.exit(status);
