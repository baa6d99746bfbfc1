//! Manifests and steps shared by kubectl-driven tests of the API test server.

use super::kubectl::Kubectl;

/// A namespaced CRD (`widgets.example.com`, short name `wd`) with a status subresource,
/// printer columns and a schema with required, minimum/maximum and enum constraints.
pub const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status'}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [replicas]
            properties:
              replicas: {type: integer, minimum: 1, maximum: 10}
              mode: {type: string, enum: [canary, full]}
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"#;

/// A valid `Widget` named `w1`.
pub const WIDGET: &str = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  replicas: 3\n  mode: canary\n";

/// Applies [`CRD`] and then [`WIDGET`] with kubectl, checking both are created.
pub async fn apply_crd_and_widget(k: &Kubectl) {
    let out = k.ok(&["apply", "-f", &k.file("crd.yaml", CRD)]).await;
    assert!(out.contains("created"), "{out}");
    let out = k.ok(&["apply", "-f", &k.file("w1.yaml", WIDGET)]).await;
    assert!(out.contains("widget.example.com/w1 created"), "{out}");
}

/// A ServiceAccount, ClusterRole, binding and Deployment: the shape of an operator chart.
const DEMO_DEPLOYMENT: &str = r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .Release.Name }}-sa
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {{ .Release.Name }}-role
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {{ .Release.Name }}-binding
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {{ .Release.Name }}-role}
subjects:
- {kind: ServiceAccount, name: {{ .Release.Name }}-sa, namespace: {{ .Release.Namespace }}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-op
spec:
  replicas: 1
  selector: {matchLabels: {app: op}}
  template:
    metadata: {labels: {app: op}}
    spec:
      serviceAccountName: {{ .Release.Name }}-sa
      containers:
      - {name: op, image: "switchback:test"}
"#;

/// Writes a helm chart (`demo`, value `a`: a ConfigMap plus an operator-shaped Deployment) under `dir` and returns its path.
pub fn write_demo_chart(dir: &std::path::Path) -> String {
    let chart = dir.join("chart");
    std::fs::create_dir_all(chart.join("templates")).expect("create the chart dir");
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: demo\nversion: 0.1.0\n",
    )
    .expect("write Chart.yaml");
    std::fs::write(
        chart.join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cfg\ndata:\n  a: {{ .Values.a | default \"1\" | quote }}\n",
    )
    .expect("write the chart template");
    std::fs::write(chart.join("templates/deploy.yaml"), DEMO_DEPLOYMENT)
        .expect("write the deployment");
    chart.to_string_lossy().into_owned()
}
