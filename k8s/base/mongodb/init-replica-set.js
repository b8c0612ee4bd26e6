// Run by the mongo-init Job (init-job.yaml) against mongo-0, as root. Idempotent:
// initiates replica set rs0 once, then creates or updates the catalog service's user
// (readWrite on its own database only) on every run, so a rotated password takes effect.
const admin = db.getSiblingDB("admin");
admin.auth(process.env.MONGO_ROOT_USERNAME, process.env.MONGO_ROOT_PASSWORD);

try {
  rs.status();
  print("replica set rs0 already initiated");
} catch (e) {
  if (e.codeName !== "NotYetInitialized") throw e;
  // mongo-0 is preferred as primary (priority 2) so that this connection to it can
  // write once the election is over.
  rs.initiate({
    _id: "rs0",
    members: [0, 1, 2].map((i) => ({ _id: i, host: `mongo-${i}.mongo:27017`, priority: i === 0 ? 2 : 1 })),
  });
  print("replica set rs0 initiated");
}

let waited = 0;
while (!db.hello().isWritablePrimary) {
  if (waited >= 180) throw new Error("mongo-0 is not primary after 180 s");
  sleep(1000);
  waited += 1;
}

const catalog = db.getSiblingDB(process.env.CATALOG_DB);
const user = process.env.CATALOG_USERNAME;
const roles = [{ role: "readWrite", db: process.env.CATALOG_DB }];
if (catalog.getUser(user)) {
  catalog.updateUser(user, { pwd: process.env.CATALOG_PASSWORD, roles });
  print(`user ${user} updated`);
} else {
  catalog.createUser({ user, pwd: process.env.CATALOG_PASSWORD, roles });
  print(`user ${user} created`);
}
