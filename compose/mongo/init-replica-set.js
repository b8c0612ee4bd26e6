// One-shot (mongo-init): makes the single mongod a one-member replica set, so the catalog
// gets what a production deployment has (majority writes, an oplog) and a second and third
// member can be added later with rs.add(). A re-run on an initialised set does nothing.
try {
  rs.status();
  print("replica set already initialised");
} catch (e) {
  if (e.codeName !== "NotYetInitialized") throw e;
  rs.initiate({ _id: "rs0", members: [{ _id: 0, host: process.env.MONGO_MEMBER || "mongo:27017" }] });
  print("replica set initialised");
}
