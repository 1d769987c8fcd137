// A second, independent SCIM 2.0 service provider for orgsync's source tests: SCIMMY
// (protocol: parsing, filters, attributes, ListResponse paging) and scimmy-routers (the
// express endpoints) over an in-memory Map. Only the storage glue below is ours.
//
// usage: node server.mjs SEED.json IDS_OUT.json AUTH
//   SEED is {"users": [{key, payload}], "groups": [{key, payload, members: [key]}]},
//   put straight into the store (creating thousands of users over HTTP would take seconds);
//   AUTH is "bearer:TOKEN" or "basic:USER:PASSWORD". The id of every key is written to
//   IDS_OUT, then "PORT <n>" is printed (a free loopback port) and it serves until killed.
import express from "express";
import SCIMMY from "scimmy";
import SCIMMYRouters from "scimmy-routers";
import {randomUUID} from "node:crypto";
import {readFileSync, writeFileSync} from "node:fs";

const [seedPath, idsPath, auth] = process.argv.slice(2);
const [scheme, ...secret] = auth.split(":");
const stores = {User: new Map(), Group: new Map()};
const SCHEMA = {
    User: "urn:ietf:params:scim:schemas:core:2.0:User",
    Group: "urn:ietf:params:scim:schemas:core:2.0:Group",
};
let version = 0;

function record(kind, payload, id) {
    const now = new Date().toISOString();
    return {...payload, schemas: [SCHEMA[kind]], id,
        meta: {resourceType: kind, created: now, lastModified: now, version: `W/"${++version}"`}};
}

const seed = JSON.parse(readFileSync(seedPath, "utf8"));
const ids = {};
const kinds = {};
for (const {key, payload} of seed.users) {
    ids[key] = randomUUID(); kinds[key] = "User";
    stores.User.set(ids[key], record("User", payload, ids[key]));
}
for (const {key} of seed.groups) { ids[key] = randomUUID(); kinds[key] = "Group"; }
for (const {key, payload, members} of seed.groups) {
    const list = members.map((m) => ({value: ids[m], type: kinds[m]}));
    stores.Group.set(ids[key], record("Group", {...payload, members: list}, ids[key]));
}
writeFileSync(idsPath, JSON.stringify(ids));

function declare(Res, kind) {
    const store = stores[kind];
    SCIMMY.Resources.declare(Res)
        .ingress((resource, instance) => {
            const id = resource.id ?? randomUUID();
            const rec = record(kind, JSON.parse(JSON.stringify(instance)), id);
            store.set(id, rec);
            return rec;
        })
        .egress((resource) => {
            const {id, filter} = resource;
            if (id) {
                if (!store.has(id)) throw new SCIMMY.Types.Error(404, null, `Resource ${id} not found`);
                return store.get(id);
            }
            const all = [...store.values()];
            return filter ? filter.match(all) : all;
        })
        .degress((resource) => {
            if (!store.delete(resource.id)) throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
        });
}
declare(SCIMMY.Resources.User, "User");
declare(SCIMMY.Resources.Group, "Group");
SCIMMY.Config.set({patch: true, filter: {supported: true, maxResults: 1000}, sort: true, bulk: false, etag: false});

const expected = scheme === "basic"
    ? `Basic ${Buffer.from(secret.join(":")).toString("base64")}`
    : `Bearer ${secret.join(":")}`;
const app = express();
app.use("/scim/v2", new SCIMMYRouters({
    type: scheme === "basic" ? "basic" : "bearer",
    docUri: "http://127.0.0.1/docs",
    handler: (req) => {
        if (req.header("Authorization") !== expected) throw new Error("Authorization failure");
        return "admin";
    },
}));
const server = app.listen(0, "127.0.0.1", () => console.log(`PORT ${server.address().port}`));
