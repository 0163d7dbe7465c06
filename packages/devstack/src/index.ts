export {
  startInstance,
  serviceMap,
  type Instance,
  type InstanceOptions,
  type InstanceUrls,
} from "./instance.js";
export { freePort } from "./freePort.js";
