// JSON Schemas (draft 2020-12) for the RabbitMQ operators' custom resources that k8s/ uses:
// RabbitmqCluster (cluster operator) and User, Permission (messaging-topology operator),
// group rabbitmq.com/v1beta1.
//
// No npm or PyPI package ships these schemas, so they are written here by hand from the
// operators' API reference (RabbitmqClusterSpec, UserSpec, PermissionSpec). They cover the
// fields those references document that a deployment like ours sets, with the same types,
// enums and limits, and refuse any other field: a typo or a field from another version
// fails here instead of being pruned silently by the API server. To use a field not listed,
// add it from the API reference. Kubernetes types inside them (resources, affinity,
// tolerations, object metadata) are checked against the strict Kubernetes schemas that
// kubernetes-validate ships, for the pinned Kubernetes version.

const K8S = "https://kubernetes.io/api/_definitions.json#/$defs/";
const ref = (name) => ({ $ref: K8S + name });
const object = (properties, required = []) => ({
  type: "object",
  additionalProperties: false,
  properties,
  required,
});
const string = { type: "string" };
const stringMap = { type: "object", additionalProperties: { type: "string" } };
const nameRef = object({ name: string }, ["name"]);

const clusterReference = object({
  name: string,
  namespace: string,
  connectionSecret: nameRef,
});

function resource(kind, spec) {
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    $id: `https://switchyard.invalid/schemas/rabbitmq.com/v1beta1/${kind}`,
    type: "object",
    additionalProperties: false,
    required: ["apiVersion", "kind", "metadata", "spec"],
    properties: {
      apiVersion: { const: "rabbitmq.com/v1beta1" },
      kind: { const: kind },
      metadata: ref("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
      spec,
    },
  };
}

const rabbitmqCluster = resource(
  "RabbitmqCluster",
  object({
    replicas: { type: "integer", minimum: 0, maximum: 2147483647 },
    image: string,
    imagePullSecrets: { type: "array", items: ref("io.k8s.api.core.v1.LocalObjectReference") },
    service: object({
      type: { enum: ["ClusterIP", "LoadBalancer", "NodePort"] },
      annotations: stringMap,
      ipFamilyPolicy: { enum: ["SingleStack", "PreferDualStack", "RequireDualStack"] },
    }),
    persistence: object({
      storageClassName: string,
      storage: ref("io.k8s.apimachinery.pkg.api.resource.Quantity"),
    }),
    resources: ref("io.k8s.api.core.v1.ResourceRequirements"),
    affinity: ref("io.k8s.api.core.v1.Affinity"),
    tolerations: { type: "array", items: ref("io.k8s.api.core.v1.Toleration") },
    terminationGracePeriodSeconds: { type: "integer", minimum: 0 },
    delayStartSeconds: { type: "integer", minimum: 0, maximum: 2147483647 },
    skipPostDeploySteps: { type: "boolean" },
    autoEnableAllFeatureFlags: { type: "boolean" },
    rabbitmq: object({
      additionalPlugins: {
        type: "array",
        maxItems: 100,
        items: { type: "string", pattern: "^\\w+$", maxLength: 100 },
      },
      additionalConfig: { type: "string", maxLength: 2000 },
      advancedConfig: { type: "string", maxLength: 100000 },
      envConfig: { type: "string", maxLength: 100000 },
      erlangInetConfig: { type: "string", maxLength: 2000 },
    }),
    tls: object({
      secretName: string,
      caSecretName: string,
      disableNonTLSListeners: { type: "boolean" },
    }),
  }),
);

const user = resource(
  "User",
  object(
    {
      rabbitmqClusterReference: clusterReference,
      importCredentialsSecret: nameRef,
      tags: {
        type: "array",
        items: { enum: ["management", "policymaker", "monitoring", "administrator"] },
      },
    },
    ["rabbitmqClusterReference"],
  ),
);

// Permission regular expressions are Erlang (PCRE) ones; "regex" checks that they at least
// compile as JavaScript regular expressions, which catches unbalanced groups and the like.
const permissionRegex = { type: "string", format: "regex" };
const permission = resource("Permission", {
  ...object(
    {
      vhost: string,
      user: string,
      userReference: nameRef,
      permissions: object({
        configure: permissionRegex,
        write: permissionRegex,
        read: permissionRegex,
      }, ["configure", "write", "read"]),
      rabbitmqClusterReference: clusterReference,
    },
    ["vhost", "permissions", "rabbitmqClusterReference"],
  ),
  // Exactly one of user / userReference, as the operator requires.
  oneOf: [{ required: ["user"] }, { required: ["userReference"] }],
});

export const schemas = {
  "rabbitmq.com/v1beta1/RabbitmqCluster": rabbitmqCluster,
  "rabbitmq.com/v1beta1/User": user,
  "rabbitmq.com/v1beta1/Permission": permission,
};
