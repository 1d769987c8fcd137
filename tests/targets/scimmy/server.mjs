// SCIMMY (protocol: parsing, filters, PATCH, ListResponse paging, discovery, errors) and
// scimmy-routers (the express endpoints) over an in-memory Map: a second, looser SCIM 2.0
// service provider that orgsync's SCIM *target* is tested against. Only the storage glue
// below is ours, and it stays minimal.
//
// usage: node server.mjs OPTIONS_JSON
//   {"token": "...",             bearer token every request must carry
//    "patch": true,              announce and accept PATCH (false: a server without PATCH)
//    "listMembers": true}        false: list pages of /Groups carry no members (the AWS
//                                IAM Identity Center quirk); GET /Groups/{id} still has them
// Prints "PORT <n>" once it listens on a free loopback port; base URL /scim/v2.
import express from "express";
import SCIMMY from "scimmy";
import SCIMMYRouters from "scimmy-routers";
import {randomUUID} from "node:crypto";

const options = {token: "", patch: true, listMembers: true, ...JSON.parse(process.argv[2] ?? "{}")};
const stores = {User: new Map(), Group: new Map()};
const userNames = new Map();   // lower-cased userName -> id (RFC 7643: userName caseExact=false)
let version = 0;

function declare(Resource, kind) {
    const store = stores[kind];
    SCIMMY.Resources.declare(Resource)
        .ingress((resource, instance) => {
            const {id} = resource;
            if (id && !store.has(id)) throw new SCIMMY.Types.Error(404, null, `Resource ${id} not found`);
            if (kind === "User") {
                const owner = userNames.get(instance.userName.toLowerCase());
                if (owner && owner !== id) throw new SCIMMY.Types.Error(409, "uniqueness", "userName already in use");
            }
            const now = new Date().toISOString();
            const previous = id ? store.get(id) : undefined;
            const record = {...JSON.parse(JSON.stringify(instance)), id: id ?? randomUUID(),
                meta: {created: previous?.meta?.created ?? now, lastModified: now, version: `W/"${++version}"`}};
            if (kind === "User") {
                if (previous) userNames.delete(previous.userName.toLowerCase());
                userNames.set(record.userName.toLowerCase(), record.id);
            }
            store.set(record.id, record);
            return record;
        })
        .egress((resource) => {
            const {id, filter} = resource;
            if (id) {
                if (!store.has(id)) throw new SCIMMY.Types.Error(404, null, `Resource ${id} not found`);
                return store.get(id);
            }
            let all = [...store.values()];
            if (filter) all = filter.match(all);
            if (kind === "Group" && !options.listMembers) all = all.map(({members, ...rest}) => rest);
            return all;
        })
        .degress((resource) => {
            const previous = store.get(resource.id);
            if (!previous) throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
            if (kind === "User") userNames.delete(previous.userName.toLowerCase());
            store.delete(resource.id);
        });
}
declare(SCIMMY.Resources.User, "User");
declare(SCIMMY.Resources.Group, "Group");
const routers = new SCIMMYRouters({
    type: "bearer",
    docUri: "http://127.0.0.1/docs",
    handler: (req) => {
        if (req.header("Authorization") !== `Bearer ${options.token}`) throw new Error("Authorization failure");
        return "admin";
    },
});
// After the routers: their constructor announces patch, filter, sort and bulk itself.
SCIMMY.Config.set({patch: options.patch, filter: {supported: true, maxResults: 1000}, sort: true,
    bulk: false, etag: false});

const app = express();
app.use("/scim/v2", routers);
const server = app.listen(0, "127.0.0.1", () => console.log(`PORT ${server.address().port}`));
