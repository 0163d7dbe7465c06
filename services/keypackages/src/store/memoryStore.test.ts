import { MemoryDirectoryStore } from "./memoryStore.js";
import { describeStoreContract } from "./storeContract.js";

describeStoreContract("memory", async (limits) => {
  const store = new MemoryDirectoryStore(limits);
  return { store, peers: [store], cleanup: async () => {} };
});
